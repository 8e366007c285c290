"""POSIX timers as Linux keeps them (tests/fixtures/timer_details.c; LTP's timer_settime01-03):
a NULL new value is EINVAL before anything is read, an overrun long past is capped at INT_MAX
and timer_getoverrun gives the taken signal's, and a CPU-time timer (glibc's timer_create
passes the kernel's dynamic clock id for it) expires on CPU time. qemuser read the value
first (EFAULT), counted no overrun, refused glibc's CPU clock id and ran every clock on wall
time."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("timer_details"))
def test_overruns_and_cpu_time(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "timer_details", flavour, status=0, timeout=60)
    assert result.stdout == (
        b"NULL new value: -1 EINVAL\n"
        b"overrun in the handler: INT_MAX\n"
        b"CPU-time timer: fired after 0.3 s of CPU time or more: 1\n"
    )
