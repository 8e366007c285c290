"""rt_sigqueueinfo/rt_tgsigqueueinfo to a pid that names no one process
(tests/fixtures/sigqueue_pids.c; LTP's rt_sigqueueinfo02): pid -1 and 0 are ESRCH (tgid -1
EINVAL), as Linux's own call says, and a real child still gets the signal. qemuser used to
send it with kill(), whose -1 is every process the user may signal: under LTP that SIGUSR1
took down the runner's whole host (the fixture uses SIGWINCH, which does nothing by default,
so that a regression disturbs nobody)."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sigqueue_pids"))
def test_queued_signals_reach_one_process(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "sigqueue_pids", flavour, status=0, workdir=tmp_path, timeout=60)
    assert result.stdout == (
        b"pid -1: -1 ESRCH\n"
        b"pid 0: -1 ESRCH\n"
        b"tgid -1: -1 EINVAL\n"
        b"a child: 0\n"
        b"a child, si_code 0: -1 EPERM\n"
        b"the child got it: yes\n"
    )
