"""Signal handlers, masks, alternate stacks, faults turned into signals, EINTR, fatal signals.

sig_basic and sig_timers must print what the same sources print built for the host, and end
the same way; sig_traps runs each architecture's own trap instructions (no native build), so
its expected lines are written here."""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_basic"))
def test_signal_handlers_then_abort(arch: str, flavour: str) -> None:
    # we die of the guest's signal, as a shell expects
    result = run_like_native(arch, "sig_basic", flavour, status=-6)
    assert result.stderr == b"qemuser: uncaught target signal 6 (Aborted) - core dumped\n"


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_timers"))
def test_timers_deliver_signals(arch: str, flavour: str) -> None:
    run_like_native(arch, "sig_timers", flavour, status=0)


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
