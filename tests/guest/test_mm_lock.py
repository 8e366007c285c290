"""Memory locks (tests/fixtures/mm_lock.c; LTP's mlock05, mmap14, munlockall01, mincore03):
mlock/munlock, MAP_LOCKED, mlockall/munlockall and mlock2 lock the host pages behind the
guest's, so /proc/self/status's VmLck, smaps' Locked and mincore say what Linux says. qemuser
accepted every call and locked nothing, and mincore called every page resident."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("mm_lock"))
def test_locks_show_in_proc_and_mincore(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "mm_lock", flavour, status=0, timeout=60)
    assert result.stdout == (
        b"at start: VmLck 0 kB\n"
        b"untouched: 0 pages resident\n"
        b"mlock: ok\n"
        b"locked: VmLck 1024 kB, smaps Locked 1024 kB, 256 of 256 pages resident\n"
        b"munlock: ok, VmLck 0 kB, smaps Locked 0 kB\n"
        b"MAP_LOCKED: VmLck 1024 kB\n"
        b"unmapped: VmLck 0 kB\n"
        b"mlock of an unmapped range: ENOMEM\n"
        b"mlockall(0): EINVAL\n"
        b"mlockall(MCL_ONFAULT): EINVAL\n"
        b"mlock2 with a bad flag: EINVAL\n"
        b"mlockall(MCL_CURRENT): ok\n"
        b"after mlockall: VmLck above 0: 1\n"
        b"munlockall: ok, VmLck 0 kB\n"
    )
