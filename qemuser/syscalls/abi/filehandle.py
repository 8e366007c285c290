"""struct file_handle (man 2 open_by_handle_at; include/linux/fs.h): {__u32 handle_bytes;
int handle_type; unsigned char f_handle[handle_bytes];}, the same on every architecture, and
name_to_handle_at's mount id: an int, or a __u64 with AT_HANDLE_MNT_ID_UNIQUE."""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout
from qemuser.syscalls.abi.scalars import Value

MAX_HANDLE_SZ = 128  # include/linux/exportfs.h: the kernel refuses a larger handle_bytes
AT_HANDLE_MNT_ID_UNIQUE = 0x001


class FileHandleHead(NamedTuple):
    handle_bytes: int
    handle_type: int


FILE_HANDLE_HEAD = Layout(
    "file_handle", FileHandleHead, [("handle_bytes", "I"), ("handle_type", "i")]
)
HANDLE_BYTES = Layout("__u32", Value, [("value", "I")])  # the first field alone
MOUNT_ID = Layout("int", Value, [("value", "i")])
MOUNT_ID_UNIQUE = Layout("__u64", Value, [("value", "Q")])
