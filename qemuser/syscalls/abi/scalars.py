"""Bare C scalars and pairs that system calls and ioctls pass by pointer, as one-field layouts
so that every guest read and write goes through a layout: int (include/uapi/asm-generic/
int-ll64.h: 4 bytes), unsigned char, loff_t (include/uapi/asm-generic/posix_types.h: long
long), and int[2] (pipe2, socketpair).
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout


class Value(NamedTuple):
    value: int


class FdPair(NamedTuple):
    fd0: int
    fd1: int


INT = Layout("int", Value, [("value", "i")])
CHAR = Layout("char", Value, [("value", "B")])
LOFF_T = Layout("loff_t", Value, [("value", "q")])
FD_PAIR = Layout("int[2]", FdPair, [("fd0", "i"), ("fd1", "i")])
