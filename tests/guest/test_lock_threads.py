"""A record-lock wait in one guest thread while another holds the lock (LTP's fcntl34/36;
tests/fixtures/lock_threads.c): F_OFD_SETLKW may sleep until the holder unlocks, so it runs on
the waiting thread's worker and the holder goes on. Before, the wait ran on the engine's own
host thread: the holder never ran again, and the program hung. And a signal ends a lock wait
with EINTR (flock07): Python's flock() and fcntl(), which qemuser called, retry on EINTR."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("lock_threads"))
def test_lock_waits_let_the_other_threads_run(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "lock_threads", flavour, status=0, workdir=tmp_path, timeout=60)
    assert result.stdout == (
        b"holder: F_OFD_SETLK 0\n"
        b"other: F_OFD_SETLK while held: -1\n"
        b"waiter: F_OFD_SETLKW 0, holder had released: yes\n"
        b"holder: unlock 0\n"
        b"holder: F_OFD_SETLK 0\n"
        b"main: F_OFD_SETLKW 0, holder had released: yes\n"
        b"child: flock(LOCK_EX) while held, signal: -1 EINTR\n"
        b"child: F_OFD_SETLKW while held, signal: -1 EINTR\n"
        b"child status 0\n"
    )
