"""Signal handlers, masks, alternate stacks, faults turned into signals, EINTR, fatal signals."""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest

SIG_BASIC_OUTPUT = b"""SIGUSR1 handled 2 times, signo 10
pending while blocked: 1, hits still 2
after unblock: hits 3
SA_RESETHAND: hits 4, handler reset 1
SIGSEGV: signo 11 code SEGV_ACCERR addr ok 1 on altstack 1
SIGSEGV: code SEGV_MAPERR addr 0x10
read interrupted: -1 Interrupted system call, last signal 14
"""


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_basic"))
def test_signal_handlers_then_abort(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "sig_basic", flavour))
    assert result.stdout == SIG_BASIC_OUTPUT
    assert result.stderr == b"qemuser: uncaught target signal 6 (Aborted) - core dumped\n"
    assert result.returncode == -6  # we die of the guest's signal, as a shell expects


TIMERS_OUTPUT = b"""itimer ticks: 3 code 128
nanosleep interrupted: -1 Interrupted system call, timer value 1234 code SI_TIMER 1
sigtimedwait: 10 pid matches 1
sigtimedwait timeout: -1 Resource temporarily unavailable
"""


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_timers"))
def test_timers_deliver_signals(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "sig_timers", flavour))
    assert result.stdout == TIMERS_OUTPUT
    assert result.returncode == 0


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_traps"))
def test_traps_become_sigill_and_sigtrap(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "sig_traps", flavour))
    assert result.stdout == (
        b"SIGILL: signo 4 code 1 addr at insn 1\nSIGTRAP: signo 5 addr at insn 1\n"
    )
    assert result.stderr == (
        b"qemuser: uncaught target signal 5 (Trace/breakpoint trap) - core dumped\n"
    )
    assert result.returncode == -5
