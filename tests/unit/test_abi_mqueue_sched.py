"""struct mq_attr (abi/mqueue.py), struct sched_attr and struct kcmp_epoll_slot
(abi/schedattr.py): sizes and offsets as include/uapi/linux/mqueue.h, sched/types.h and kcmp.h
give them; the calls hand the guest's bytes to the host (x86_64) as they are, so these are the
host's numbers too."""

from __future__ import annotations

import pytest

from qemuser.syscalls.abi.layout import Layout
from qemuser.syscalls.abi.mqueue import MQ_ATTR
from qemuser.syscalls.abi.schedattr import (
    KCMP_EPOLL_SLOT,
    SCHED_ATTR,
    SCHED_ATTR_SIZE_VER0,
    SCHED_ATTR_SIZE_VER1,
)


@pytest.mark.parametrize(
    ("layout", "size", "offsets"),
    [
        (
            MQ_ATTR,
            64,
            {"mq_flags": 0, "mq_maxmsg": 8, "mq_msgsize": 16, "mq_curmsgs": 24, "__reserved": 32},
        ),
        (
            SCHED_ATTR,
            56,
            {
                "size": 0,
                "sched_policy": 4,
                "sched_flags": 8,
                "sched_nice": 16,
                "sched_priority": 20,
                "sched_runtime": 24,
                "sched_deadline": 32,
                "sched_period": 40,
                "sched_util_min": 48,
                "sched_util_max": 52,
            },
        ),
        (KCMP_EPOLL_SLOT, 12, {"efd": 0, "tfd": 4, "toff": 8}),
    ],
)
def test_layout_size_and_offsets(layout: Layout, size: int, offsets: dict[str, int]) -> None:
    assert layout.size == size
    assert layout.offsets == offsets


def test_sched_attr_versions_end_where_the_header_says() -> None:
    assert SCHED_ATTR.offsets["sched_util_min"] == SCHED_ATTR_SIZE_VER0
    assert SCHED_ATTR.size == SCHED_ATTR_SIZE_VER1
    record = SCHED_ATTR.unpack(SCHED_ATTR.pack(size=56, sched_nice=-3, sched_util_max=1024))
    assert (record.size, record.sched_nice, record.sched_util_max) == (56, -3, 1024)
