"""/proc/self/task lists the guest's threads and no others (tests/fixtures/proc_task.c; LTP's
futex_wake02, which waits until every task but its own sleeps). qemuser's listing was the
host's, with the main guest thread's worker and the emulator's own threads in it."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("proc_task"))
def test_only_the_guests_threads_are_listed(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "proc_task", flavour, status=0, timeout=60)
    assert result.stdout == b"/proc/self/task: 3 entries, 3 of them our threads\n"
