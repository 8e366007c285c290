"""A forked or vforked child starts with no signal pending (tests/fixtures/fork_pending.c;
LTP's vfork02), while the parent keeps its own. qemuser's child inherited the parent's queue."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("fork_pending"))
def test_a_child_has_nothing_pending(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "fork_pending", flavour, status=0, timeout=60)
    assert result.stdout == (
        b"parent: SIGUSR1 pending 1\n"
        b"vfork child: SIGUSR1 pending 0\n"
        b"fork child: SIGUSR1 pending 0\n"
        b"parent after: SIGUSR1 pending 1\n"
    )
