"""What delivery leaves of a sigaction (tests/fixtures/sig_actions.c; LTP's sigaction01):
SA_RESETHAND resets the handler to SIG_DFL and keeps the flags and the mask, as Linux's
get_signal() does. qemuser used to clear the whole action."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_actions"))
def test_resethand_keeps_the_flags(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "sig_actions", flavour, status=0, timeout=60)
    assert result.stdout == (
        b"in the handler: SIG_DFL 1, SA_SIGINFO 1, SA_RESETHAND 1, SA_RESTART 1, "
        b"mask has SIGUSR2 1, siginfo 1\n"
    )
