"""struct stat, struct statx and struct statfs for the guest.

stat: include/uapi/asm-generic/stat.h (the 64-bit layout, 128 bytes), used by aarch64 and riscv64.
statx: include/uapi/linux/stat.h (256 bytes, the same on every architecture; fields as of the
Linux 6.1 headers Debian's linux-libc-dev ships).
statfs: include/uapi/asm-generic/statfs.h (64-bit: every __statfs_word is 8 bytes, 120 bytes).

The host's facts come from its statx() system call, decoded with the same STATX layout (it is
architecture-independent), so one host call serves fstat, newfstatat and statx.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout


class Stat(NamedTuple):
    st_dev: int
    st_ino: int
    st_mode: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_rdev: int
    st_size: int
    st_blksize: int
    st_blocks: int
    st_atime: int
    st_atime_nsec: int
    st_mtime: int
    st_mtime_nsec: int
    st_ctime: int
    st_ctime_nsec: int


STAT = Layout(
    "stat",
    Stat,
    [
        ("st_dev", "Q"),
        ("st_ino", "Q"),
        ("st_mode", "I"),
        ("st_nlink", "I"),
        ("st_uid", "I"),
        ("st_gid", "I"),
        ("st_rdev", "Q"),
        ("__pad1", "8x"),
        ("st_size", "q"),
        ("st_blksize", "i"),
        ("__pad2", "4x"),
        ("st_blocks", "q"),
        ("st_atime", "q"),
        ("st_atime_nsec", "Q"),
        ("st_mtime", "q"),
        ("st_mtime_nsec", "Q"),
        ("st_ctime", "q"),
        ("st_ctime_nsec", "Q"),
        ("__unused4", "4x"),
        ("__unused5", "4x"),
    ],
    size=128,
)


def _timestamp_fields(name: str) -> list[tuple[str, str]]:
    # struct statx_timestamp { __s64 tv_sec; __u32 tv_nsec; __s32 __reserved; }
    return [(f"{name}_sec", "q"), (f"{name}_nsec", "I"), (f"__{name}_reserved", "4x")]


class Statx(NamedTuple):
    stx_mask: int
    stx_blksize: int
    stx_attributes: int
    stx_nlink: int
    stx_uid: int
    stx_gid: int
    stx_mode: int
    stx_ino: int
    stx_size: int
    stx_blocks: int
    stx_attributes_mask: int
    stx_atime_sec: int
    stx_atime_nsec: int
    stx_btime_sec: int
    stx_btime_nsec: int
    stx_ctime_sec: int
    stx_ctime_nsec: int
    stx_mtime_sec: int
    stx_mtime_nsec: int
    stx_rdev_major: int
    stx_rdev_minor: int
    stx_dev_major: int
    stx_dev_minor: int
    stx_mnt_id: int
    stx_dio_mem_align: int
    stx_dio_offset_align: int


STATX = Layout(
    "statx",
    Statx,
    [
        ("stx_mask", "I"),
        ("stx_blksize", "I"),
        ("stx_attributes", "Q"),
        ("stx_nlink", "I"),
        ("stx_uid", "I"),
        ("stx_gid", "I"),
        ("stx_mode", "H"),
        ("__spare0", "2x"),
        ("stx_ino", "Q"),
        ("stx_size", "Q"),
        ("stx_blocks", "Q"),
        ("stx_attributes_mask", "Q"),
        *_timestamp_fields("stx_atime"),
        *_timestamp_fields("stx_btime"),
        *_timestamp_fields("stx_ctime"),
        *_timestamp_fields("stx_mtime"),
        ("stx_rdev_major", "I"),
        ("stx_rdev_minor", "I"),
        ("stx_dev_major", "I"),
        ("stx_dev_minor", "I"),
        ("stx_mnt_id", "Q"),
        ("stx_dio_mem_align", "I"),
        ("stx_dio_offset_align", "I"),
    ],
    size=256,
)

STATX_BASIC_STATS = 0x7FF
# The stx_mask bits whose fields STATX carries (up to STATX_DIOALIGN): a newer host kernel may
# report more, but their fields lie in what this layout treats as spare, so they are not passed on.
STATX_KNOWN_MASK = 0x3FFF


class Statfs(NamedTuple):
    f_type: int
    f_bsize: int
    f_blocks: int
    f_bfree: int
    f_bavail: int
    f_files: int
    f_ffree: int
    f_fsid0: int
    f_fsid1: int
    f_namelen: int
    f_frsize: int
    f_flags: int


STATFS = Layout(
    "statfs",
    Statfs,
    [
        ("f_type", "q"),
        ("f_bsize", "q"),
        ("f_blocks", "Q"),
        ("f_bfree", "Q"),
        ("f_bavail", "Q"),
        ("f_files", "Q"),
        ("f_ffree", "Q"),
        ("f_fsid0", "i"),
        ("f_fsid1", "i"),
        ("f_namelen", "q"),
        ("f_frsize", "q"),
        ("f_flags", "q"),
        ("f_spare", "32x"),
    ],
    size=120,
)


def stat_from_statx(stx: Statx) -> bytes:
    """A guest struct stat from decoded statx fields, as the kernel's cp_new_stat fills it."""
    return STAT.pack(
        Stat(
            st_dev=os.makedev(stx.stx_dev_major, stx.stx_dev_minor),
            st_ino=stx.stx_ino,
            st_mode=stx.stx_mode,
            st_nlink=stx.stx_nlink,
            st_uid=stx.stx_uid,
            st_gid=stx.stx_gid,
            st_rdev=os.makedev(stx.stx_rdev_major, stx.stx_rdev_minor),
            st_size=stx.stx_size,
            st_blksize=stx.stx_blksize,
            st_blocks=stx.stx_blocks,
            st_atime=stx.stx_atime_sec,
            st_atime_nsec=stx.stx_atime_nsec,
            st_mtime=stx.stx_mtime_sec,
            st_mtime_nsec=stx.stx_mtime_nsec,
            st_ctime=stx.stx_ctime_sec,
            st_ctime_nsec=stx.stx_ctime_nsec,
        )
    )


def guest_statx(stx: Statx) -> bytes:
    """A guest struct statx from the host's, keeping only the fields this layout knows."""
    return STATX.pack(stx._replace(stx_mask=stx.stx_mask & STATX_KNOWN_MASK))
