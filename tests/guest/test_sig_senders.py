"""What an SA_SIGINFO handler learns of a signal from another process or from the kernel
(tests/fixtures/sig_senders.c; LTP's rt_sigqueueinfo01, pidfd_send_signal01, fcntl38/39):
the sender's pid and uid, SI_QUEUE and si_value, F_SETSIG's si_fd and si_band. The host
records each signal's siginfo for the bridge (qemuser/host/sigcapture.py); before that the
guest saw si_pid 0, SI_USER, no value and no fd."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_senders"))
def test_the_senders_siginfo_reaches_the_handler(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "sig_senders", flavour, status=0, timeout=60)
    assert result.stdout == (
        b"kill: signo 10 code 0 pid-is-child 1 uid 1\n"
        b"sigqueue: signo 12 code -1 (SI_QUEUE -1) value 777 pid-is-child 1\n"
        b"rt_sigqueueinfo to a thread: 0, signo 10 code -1 value 4242\n"
        b"F_SETSIG: signo-is-ours 1 code 1 (POLL_IN 1) fd 20 band-has-POLLIN 1\n"
    )
