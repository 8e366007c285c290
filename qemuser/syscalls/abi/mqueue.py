"""struct mq_attr (include/uapi/linux/mqueue.h): four longs and four reserved ones, the same on
aarch64, riscv64 and the host (x86_64), so the POSIX message queue calls hand the guest's
record to the host as it is. mq_notify's struct sigevent is siginfo.py's SIGEVENT."""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout


class MqAttr(NamedTuple):
    mq_flags: int
    mq_maxmsg: int
    mq_msgsize: int
    mq_curmsgs: int


MQ_ATTR = Layout(
    "mq_attr",
    MqAttr,
    [("mq_flags", "q"), ("mq_maxmsg", "q"), ("mq_msgsize", "q"), ("mq_curmsgs", "q"),
     ("__reserved", "32x")],
)  # fmt: skip
