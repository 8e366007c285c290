"""eventfd, timerfd, epoll (struct translation), signalfd, inotify."""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest

EVENTS_OUTPUT = b"""eventfd: 8
epoll: 1 event(s), timer data 42
timerfd expirations: 1
epoll: 1 event(s), pipe data 0x1122334455667788 events 0x1
signalfd: 128 bytes, signo 12, pid matches 1
inotify: mask IN_CREATE 1 name new-file
"""


@pytest.mark.parametrize(("arch", "flavour"), all_builds("events"))
def test_event_fds(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "events", flavour))
    assert result.stdout == EVENTS_OUTPUT
    assert result.returncode == 0
