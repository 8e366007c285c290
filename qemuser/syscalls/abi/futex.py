"""struct robust_list_head (include/uapi/linux/futex.h): the head of a thread's robust-futex
list that set_robust_list registers: {struct robust_list list; long futex_offset; struct
robust_list *list_op_pending}, 24 bytes on 64-bit. The kernel checks the length the caller
gives against its size.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout


class RobustListHead(NamedTuple):
    list_next: int
    futex_offset: int
    list_op_pending: int


ROBUST_LIST_HEAD = Layout(
    "robust_list_head",
    RobustListHead,
    [("list_next", "Q"), ("futex_offset", "q"), ("list_op_pending", "Q")],
)
