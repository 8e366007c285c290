"""Signals reach guest threads that all sleep in system calls (read, waitpid, nanosleep,
pthread_cond_wait, sigsuspend), on the thread Linux would choose, and end or restart their
calls as Linux would.

The expected lines are Linux's: the same source built for the host (the "native" case) must
pass the very same steps."""

import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import NATIVE, all_builds, command_for, fixture_path

BEFORE_READY = [
    b"A: main read -1 EINTR, handler on main 1\n",
    b"B: main read 1 'x' after a restart, alarms 2\n",
    b"E: thread 2 read -1 EINTR, handler on it 1\n",
    b"C: thread 2 read -1 EINTR, handler on it 1\n",
    b"D: handler wrote 'h'\n",
    b"D: thread 3 back from pthread_cond_wait with flag 1, handler ran on it 1\n",
    b"G: main waitpid -1 EINTR\n",
    b"G: thread 1 nanosleep -1 EINTR, time left 1\n",
    b"G: child 1 exited 7\n",
    b"H: main sigsuspend -1 EINTR, handler on main 1\n",
    b"H: SIGUSR2 blocked again after sigsuspend 1\n",
    b"ready\n",
]


def _threads_in_read(pid: int) -> int:
    """How many host threads of `pid` sleep in read(2) (x86_64 number 0)."""
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "syscall").read_text().split(" ", 1)[0] == "0":
                count += 1
        except OSError:
            pass  # a thread that just ended
    return count


def _wait_until_reading(pid: int, threads: int) -> None:
    """Until `threads` threads sleep in read(): a signal sent before would find a thread
    on its way into read(), which is not what is tested (and hangs on Linux too)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _threads_in_read(pid) >= threads:
            return
        time.sleep(0.01)
    raise AssertionError(f"{threads} threads never blocked in read()")


def _expect_line(process: subprocess.Popen, line: bytes, timeout: float = 60) -> None:
    """The next output line, within `timeout` seconds (a lost signal fails, not hangs)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s; expected {line!r}"
    got = process.stdout.readline()
    assert got == line, f"expected {line!r}, got {got!r}"


def run_thread_signals(command: list[str]) -> None:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in BEFORE_READY:
            _expect_line(process, line)
        # the main thread, thread 1 and thread 2 in read(); thread 3 in its futex
        _wait_until_reading(process.pid, 3)
        process.send_signal(signal.SIGTERM)
        _expect_line(process, b"F: main read -1 EINTR, handler on main 1\n")
        _wait_until_reading(process.pid, 3)  # main now waits for thread 2's report
        process.send_signal(signal.SIGUSR1)  # blocked by all but thread 2
        _expect_line(process, b"F: thread 2 read -1 EINTR, handler on it 1\n")
        _expect_line(process, b"done\n")
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        assert process.stderr.read() == b""
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(("arch", "flavour"), [*all_builds("thread_signals"), (NATIVE, "dynamic")])
def test_signals_interrupt_blocked_threads(arch: str, flavour: str) -> None:
    run_thread_signals(command_for(arch, fixture_path(arch, "thread_signals", flavour)))
