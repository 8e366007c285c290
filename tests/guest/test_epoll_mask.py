"""epoll_pwait's signal mask and epoll_pwait2's timeout (tests/fixtures/epoll_mask.c; LTP's
epoll_pwait01 and epoll_pwait05): a signal the temporary mask blocks waits until after the
call, one it lets through ends it with EINTR, and a bad timespec is EINVAL. qemuser's wait
ended on any host signal, and a negative timeout was taken for a short one."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("epoll_mask"))
def test_the_mask_holds_for_the_wait(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "epoll_mask", flavour, status=0, timeout=60)
    assert result.stdout == (
        b"SIGUSR1 blocked: 1 -, handler ran 1\n"
        b"not blocked: -1 EINTR, handler ran 1\n"
        b"epoll_pwait2 {-1, 0}: -1 EINVAL\n"
        b"epoll_pwait2 {0, -1}: -1 EINVAL\n"
        b"epoll_pwait2 {0, 1000000000}: -1 EINVAL\n"
        b"epoll_pwait2 100 ms, nothing ready: 0 -\n"
    )
