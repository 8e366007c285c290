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

from qemuser.syscalls.abi.layout import Layout

STAT = Layout(
    "stat",
    [
        ("st_dev", "Q"),
        ("st_ino", "Q"),
        ("st_mode", "I"),
        ("st_nlink", "I"),
        ("st_uid", "I"),
        ("st_gid", "I"),
        ("st_rdev", "Q"),
        ("__pad1", "Q"),
        ("st_size", "q"),
        ("st_blksize", "i"),
        ("__pad2", "i"),
        ("st_blocks", "q"),
        ("st_atime", "q"),
        ("st_atime_nsec", "Q"),
        ("st_mtime", "q"),
        ("st_mtime_nsec", "Q"),
        ("st_ctime", "q"),
        ("st_ctime_nsec", "Q"),
        ("__unused4", "I"),
        ("__unused5", "I"),
    ],
    size=128,
)


def _timestamp_fields(name: str) -> list[tuple[str, str]]:
    # struct statx_timestamp { __s64 tv_sec; __u32 tv_nsec; __s32 __reserved; }
    return [(f"{name}_sec", "q"), (f"{name}_nsec", "I"), (f"__{name}_reserved", "i")]


STATX = Layout(
    "statx",
    [
        ("stx_mask", "I"),
        ("stx_blksize", "I"),
        ("stx_attributes", "Q"),
        ("stx_nlink", "I"),
        ("stx_uid", "I"),
        ("stx_gid", "I"),
        ("stx_mode", "H"),
        ("__spare0", "H"),
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

STATFS = Layout(
    "statfs",
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
        ("f_spare", "32s"),
    ],
    size=120,
)

# struct __kernel_timespec (include/uapi/linux/time_types.h): utimensat's times[2].
TIMESPEC = Layout("timespec", [("tv_sec", "q"), ("tv_nsec", "q")], size=16)


def stat_from_statx(stx: dict[str, object]) -> bytes:
    """A guest struct stat from decoded statx fields, as the kernel's cp_new_stat fills it."""

    def field(name: str) -> int:
        value = stx[name]
        assert isinstance(value, int)
        return value

    return STAT.pack(
        st_dev=os.makedev(field("stx_dev_major"), field("stx_dev_minor")),
        st_ino=field("stx_ino"),
        st_mode=field("stx_mode"),
        st_nlink=field("stx_nlink"),
        st_uid=field("stx_uid"),
        st_gid=field("stx_gid"),
        st_rdev=os.makedev(field("stx_rdev_major"), field("stx_rdev_minor")),
        st_size=field("stx_size"),
        st_blksize=field("stx_blksize"),
        st_blocks=field("stx_blocks"),
        st_atime=field("stx_atime_sec"),
        st_atime_nsec=field("stx_atime_nsec"),
        st_mtime=field("stx_mtime_sec"),
        st_mtime_nsec=field("stx_mtime_nsec"),
        st_ctime=field("stx_ctime_sec"),
        st_ctime_nsec=field("stx_ctime_nsec"),
    )


def guest_statx(stx: dict[str, object]) -> bytes:
    """A guest struct statx from the host's, keeping only the fields this layout knows."""
    values = dict(stx)
    mask = values["stx_mask"]
    assert isinstance(mask, int)
    values["stx_mask"] = mask & STATX_KNOWN_MASK
    return STATX.pack(**values)
