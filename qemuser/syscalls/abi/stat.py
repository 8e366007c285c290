"""struct stat and struct statx for the guest.

stat: include/uapi/asm-generic/stat.h (the 64-bit layout, 128 bytes), used by aarch64 and riscv64.
statx: include/uapi/linux/stat.h (256 bytes).
"""

from __future__ import annotations

import os

from qemuser.syscalls.abi.layout import Layout

STAT = Layout(
    "stat",
    [
        ("st_dev", "Q"), ("st_ino", "Q"), ("st_mode", "I"), ("st_nlink", "I"),
        ("st_uid", "I"), ("st_gid", "I"), ("st_rdev", "Q"), ("__pad1", "Q"),
        ("st_size", "q"), ("st_blksize", "i"), ("__pad2", "i"), ("st_blocks", "q"),
        ("st_atime", "q"), ("st_atime_nsec", "Q"), ("st_mtime", "q"), ("st_mtime_nsec", "Q"),
        ("st_ctime", "q"), ("st_ctime_nsec", "Q"), ("__unused4", "I"), ("__unused5", "I"),
    ],
    size=128,
)

STATX_TIMESTAMP = Layout("statx_timestamp", [("tv_sec", "q"), ("tv_nsec", "I")], size=16)

STATX = Layout(
    "statx",
    [
        ("stx_mask", "I"), ("stx_blksize", "I"), ("stx_attributes", "Q"),
        ("stx_nlink", "I"), ("stx_uid", "I"), ("stx_gid", "I"), ("stx_mode", "H"),
        ("stx_ino", "Q"), ("stx_size", "Q"), ("stx_blocks", "Q"), ("stx_attributes_mask", "Q"),
        ("stx_atime", "16s"), ("stx_btime", "16s"), ("stx_ctime", "16s"), ("stx_mtime", "16s"),
        ("stx_rdev_major", "I"), ("stx_rdev_minor", "I"),
        ("stx_dev_major", "I"), ("stx_dev_minor", "I"),
        ("stx_mnt_id", "Q"),
    ],
    size=256,
)

STATX_BASIC_STATS = 0x7FF


def _ns(t: int) -> tuple[int, int]:
    return divmod(t, 1_000_000_000)


def pack_stat(st: os.stat_result) -> bytes:
    """Host stat result -> guest struct stat, field by field."""
    a_s, a_ns = _ns(st.st_atime_ns)
    m_s, m_ns = _ns(st.st_mtime_ns)
    c_s, c_ns = _ns(st.st_ctime_ns)
    return STAT.pack(
        st_dev=st.st_dev, st_ino=st.st_ino, st_mode=st.st_mode, st_nlink=st.st_nlink,
        st_uid=st.st_uid, st_gid=st.st_gid, st_rdev=st.st_rdev, st_size=st.st_size,
        st_blksize=st.st_blksize, st_blocks=st.st_blocks,
        st_atime=a_s, st_atime_nsec=a_ns, st_mtime=m_s, st_mtime_nsec=m_ns,
        st_ctime=c_s, st_ctime_nsec=c_ns,
    )


def _timestamp(ns: int) -> bytes:
    s, n = _ns(ns)
    return STATX_TIMESTAMP.pack(tv_sec=s, tv_nsec=n)


def pack_statx(st: os.stat_result) -> bytes:
    return STATX.pack(
        stx_mask=STATX_BASIC_STATS, stx_blksize=st.st_blksize, stx_nlink=st.st_nlink,
        stx_uid=st.st_uid, stx_gid=st.st_gid, stx_mode=st.st_mode & 0xFFFF, stx_ino=st.st_ino,
        stx_size=st.st_size, stx_blocks=st.st_blocks,
        stx_atime=_timestamp(st.st_atime_ns), stx_ctime=_timestamp(st.st_ctime_ns),
        stx_mtime=_timestamp(st.st_mtime_ns),
        stx_rdev_major=os.major(st.st_rdev), stx_rdev_minor=os.minor(st.st_rdev),
        stx_dev_major=os.major(st.st_dev), stx_dev_minor=os.minor(st.st_dev),
    )
