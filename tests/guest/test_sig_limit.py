"""RLIMIT_SIGPENDING (tests/fixtures/sig_limit.c; LTP's tgkill02): past the limit a queued
real-time signal from sigqueue() or tgkill() is EAGAIN, kill()'s is still queued. qemuser
queued every one. (Linux counts the user's signals in all its processes; qemuser counts the
process's own, which is what a single test can see.)"""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_limit"))
def test_queueing_past_the_limit_is_eagain(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "sig_limit", flavour, status=0, timeout=60)
    assert result.stdout == (
        b"setrlimit: ok\nsigqueue: EAGAIN\ntgkill: EAGAIN\nkill: ok\npending: 1\n"
    )
