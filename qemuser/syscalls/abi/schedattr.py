"""struct sched_attr (include/uapi/linux/sched/types.h) of sched_setattr/sched_getattr, and
struct kcmp_epoll_slot (include/uapi/linux/kcmp.h) of kcmp's KCMP_EPOLL_TFD. Both are made of
fixed-size fields, the same on aarch64, riscv64 and the host (x86_64), so the calls hand the
guest's bytes to the host as they are. sched_attr grew: SCHED_ATTR_SIZE_VER0 (48 bytes) ends at
sched_period, VER1 (56) adds the utilisation clamps; the kernel reads and writes the size the
caller names in `size`, and accepts a longer record whose extra bytes are zero."""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout

SCHED_ATTR_SIZE_VER0 = 48
SCHED_ATTR_SIZE_VER1 = 56


class SchedAttr(NamedTuple):
    size: int
    sched_policy: int
    sched_flags: int
    sched_nice: int
    sched_priority: int
    sched_runtime: int
    sched_deadline: int
    sched_period: int
    sched_util_min: int
    sched_util_max: int


SCHED_ATTR = Layout(
    "sched_attr",
    SchedAttr,
    [("size", "I"), ("sched_policy", "I"), ("sched_flags", "Q"), ("sched_nice", "i"),
     ("sched_priority", "I"), ("sched_runtime", "Q"), ("sched_deadline", "Q"),
     ("sched_period", "Q"), ("sched_util_min", "I"), ("sched_util_max", "I")],
)  # fmt: skip


class KcmpEpollSlot(NamedTuple):
    efd: int
    tfd: int
    toff: int


KCMP_EPOLL_SLOT = Layout(
    "kcmp_epoll_slot", KcmpEpollSlot, [("efd", "I"), ("tfd", "I"), ("toff", "I")]
)
