"""futex(2)'s errors and interruptions (tests/fixtures/futex_errors.c; LTP's futex_wake05,
futex_cmp_requeue02/03, futex_wait07): a shared op on a hole, a PROT_NONE page or a file page
past its file's end is EFAULT (a private wake is not), negative requeue counts are EINVAL, and a
signal whose handler has no SA_RESTART ends a lone thread's wait with EINTR, on a private word
and on a shared one. Before, the wakes returned 0, the requeues succeeded and the waits slept
out their 5 s timeout (the private one forever)."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("futex_errors"))
def test_futex_errors_as_on_linux(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "futex_errors", flavour, status=0, workdir=tmp_path, timeout=60)
    assert result.stderr == b""
    out = result.stdout
    assert b"wake, hole: -1 EFAULT\n" in out
    assert b"private wake, hole: 0\n" in out
    assert b"cmp_requeue, requeue -1: -1 EINVAL\n" in out
    assert b"untimed private wait, signal: -1 EINTR\nhandler ran 3 times\n" in out
