"""Shared futexes across processes (issue 11: LTP's checkpoints, 31 tests): a futex without
FUTEX_PRIVATE_FLAG on a MAP_SHARED page is the host kernel's futex on the page's host address,
so a wake from one process reaches a waiter in another (tests/fixtures/futex_shared.c); private
futexes and shared ones on private memory stay in the process. Each run prints what the same
source prints built natively. Before the shared path, the first wait never returned: the
parent's wakes found nobody and the child ran out its 20 s."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("futex_shared"))
def test_shared_futexes_behave_as_on_linux(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "futex_shared", flavour, status=0, workdir=tmp_path, timeout=60)
    assert result.stderr == b""
    assert b"file mapping: woken 1\nfile mapping: child status 0\n" in result.stdout
    assert b"requeue: woken or moved 2\n" in result.stdout
