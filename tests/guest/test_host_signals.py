"""Signals sent to the emulator's process reach the guest's handlers, whatever it is doing.

The lines each step expects are checked against Linux too: every test also drives the same
source built for the host (the "native" case), which must pass the very same steps."""

import os
import select
import signal
import subprocess
import time

import pytest

from tests.conftest import NATIVE, all_builds, command_for, fixture_path


def _wait_until_blocked_in_read(pid: int) -> None:
    """Until the process sleeps in the host's read(2) (x86_64 number 0), so that the signal
    interrupts the read rather than arriving before it, which Linux would not count as an
    interruption either."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/syscall") as f:
            if f.read().split(" ", 1)[0] == "0":
                return
        time.sleep(0.01)
    raise AssertionError("the guest never blocked in read()")


def _expect_line(process: subprocess.Popen, line: bytes, timeout: float = 60) -> None:
    """The next line of the guest's output, within `timeout` seconds (a lost signal must
    fail the test, not hang it)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s; expected {line!r}"
    assert process.stdout.readline() == line


@pytest.mark.parametrize(("arch", "flavour"), [*all_builds("sig_host"), (NATIVE, "dynamic")])
def test_host_signals_reach_guest_handlers(arch: str, flavour: str) -> None:
    read_end, write_end = os.pipe()  # stdin that never delivers data
    process = subprocess.Popen(
        command_for(arch, fixture_path(arch, "sig_host", flavour)),
        stdin=read_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _expect_line(process, b"ready\n")
        _wait_until_blocked_in_read(process.pid)
        process.send_signal(signal.SIGUSR1)
        _expect_line(process, b"read returned -1, usr1 1\n")
        process.send_signal(signal.SIGHUP)
        _expect_line(process, b"hup seen while computing\n")
        process.send_signal(signal.SIGTERM)
        _expect_line(process, b"term\n")
        assert process.wait(timeout=60) == 3
    finally:
        process.kill()
        process.wait()
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize(
    ("arch", "flavour"), [*all_builds("fork_spin_signal"), (NATIVE, "dynamic")]
)
def test_forked_child_computing_without_syscalls_gets_signals(arch: str, flavour: str) -> None:
    # The handler is installed inside an engine run that started with no handler, and the
    # child goes on inside the run it forked from: both need the tick from then on.
    process = subprocess.Popen(
        command_for(arch, fixture_path(arch, "fork_spin_signal", flavour)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a spinning child that never got its signal dies with us
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert (stdout, stderr, process.returncode) == (b"child exited 7\n", b"", 0)
