"""eventfd, timerfd, epoll (struct translation), signalfd, inotify: as the same source built for
the host does them."""

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("events"))
def test_event_fds(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "events", flavour, status=0)
    assert result.stderr == b""
