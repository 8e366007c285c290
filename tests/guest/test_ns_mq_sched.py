"""The system calls LTP found missing (issue 11), each the host's own call on the guest's
process (tests/fixtures/ns_mq_sched.c): POSIX message queues (mq_open, mq_timedsend,
mq_timedreceive, mq_getsetattr, mq_notify with a signal, mq_unlink), sched_setattr and
sched_getattr (E2BIG writes the kernel's size back), membarrier, kcmp, and in forked children
unshare and setns of a UTS namespace and a tmpfs mounted and unmounted in a mount namespace of
its own. Each run prints what the same source prints built natively: before
syscalls/mqueue.py, namespaces.py and scheduling.py every one of these calls was ENOSYS."""

from __future__ import annotations

import os

import pytest

from tests.conftest import all_builds, run_like_native

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and mount need root")


@pytest.mark.parametrize(("arch", "flavour"), all_builds("ns_mq_sched"))
def test_they_behave_as_on_linux(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "ns_mq_sched", flavour, status=0, workdir=tmp_path, timeout=60)
    assert result.stderr == b""
    out = result.stdout
    assert b'mq_receive: 5 "high" priority 7\nmq_receive: 4 "low" priority 1\n' in out
    assert b"notified: 1\n" in out
    assert b"sched_setattr longer, non-zero tail: -1 E2BIG\nsize written back: 56\n" in out
    assert b"child: hostname qemuser-ns\n" in out
    assert b"child: mount tmpfs: 0\nchild: it is a tmpfs: yes\n" in out
