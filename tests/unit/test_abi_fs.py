"""Sizes and offsets of the file-system structs, and the open-flag translation, against the
kernel headers they cite (offsets as offsetof() gives them for aarch64 and riscv64)."""

import pytest

from qemuser.syscalls.abi import termios
from qemuser.syscalls.abi.fcntl import F_OWNER_EX, FLOCK, GENERIC_FLAGS, OpenFlagCodec
from qemuser.syscalls.abi.stat import (
    STAT,
    STATFS,
    STATX,
    STATX_KNOWN_MASK,
    TIMESPEC,
    guest_statx,
    stat_from_statx,
)


def test_struct_stat_is_asm_generic_64_bit() -> None:
    assert STAT.size == 128
    assert STAT.offsets == {
        "st_dev": 0,
        "st_ino": 8,
        "st_mode": 16,
        "st_nlink": 20,
        "st_uid": 24,
        "st_gid": 28,
        "st_rdev": 32,
        "__pad1": 40,
        "st_size": 48,
        "st_blksize": 56,
        "__pad2": 60,
        "st_blocks": 64,
        "st_atime": 72,
        "st_atime_nsec": 80,
        "st_mtime": 88,
        "st_mtime_nsec": 96,
        "st_ctime": 104,
        "st_ctime_nsec": 112,
        "__unused4": 120,
        "__unused5": 124,
    }


def test_struct_statx() -> None:
    assert STATX.size == 256
    expected = {
        "stx_mask": 0,
        "stx_blksize": 4,
        "stx_attributes": 8,
        "stx_nlink": 16,
        "stx_uid": 20,
        "stx_gid": 24,
        "stx_mode": 28,
        "stx_ino": 32,
        "stx_size": 40,
        "stx_blocks": 48,
        "stx_attributes_mask": 56,
        "stx_atime_sec": 64,
        "stx_atime_nsec": 72,
        "stx_btime_sec": 80,
        "stx_ctime_sec": 96,
        "stx_mtime_sec": 112,
        "stx_mtime_nsec": 120,
        "stx_rdev_major": 128,
        "stx_rdev_minor": 132,
        "stx_dev_major": 136,
        "stx_dev_minor": 140,
        "stx_mnt_id": 144,
        "stx_dio_mem_align": 152,
        "stx_dio_offset_align": 156,
    }
    for name, offset in expected.items():
        assert STATX.offsets[name] == offset, name


def test_struct_statfs_flock_timespec() -> None:
    assert STATFS.size == 120
    assert STATFS.offsets["f_fsid0"] == 56
    assert STATFS.offsets["f_namelen"] == 64
    assert STATFS.offsets["f_flags"] == 80
    assert STATFS.offsets["f_spare"] == 88
    assert FLOCK.size == 32
    assert FLOCK.offsets == {"l_type": 0, "l_whence": 2, "l_start": 8, "l_len": 16, "l_pid": 24}
    assert F_OWNER_EX.size == 8
    assert TIMESPEC.size == 16
    assert TIMESPEC.offsets == {"tv_sec": 0, "tv_nsec": 8}


def test_terminal_structs_and_requests() -> None:
    assert termios.TERMIOS.size == 36
    assert termios.TERMIOS.offsets["c_line"] == 16
    assert termios.TERMIOS.offsets["c_cc"] == 17
    assert termios.TERMIOS2.size == 44
    assert termios.TERMIOS2.offsets["c_ispeed"] == 36
    assert termios.TERMIOS2.offsets["c_ospeed"] == 40
    assert termios.WINSIZE.size == 8
    # _IOR/_IOW requests, as the C preprocessor expands them for these targets
    assert termios.TCGETS2 == 0x802C542A
    assert termios.TCSETSF2 == 0x402C542D
    assert termios.TIOCGPTN == 0x80045430
    assert termios.TIOCSPTLCK == 0x40045431
    assert termios.TIOCGPTPEER == 0x5441


def test_stat_from_statx_fills_every_field() -> None:
    stx = STATX.unpack(bytes(256))
    stx.update(
        stx_dev_major=8,
        stx_dev_minor=0x123,
        stx_ino=77,
        stx_mode=0o100644,
        stx_nlink=2,
        stx_uid=1000,
        stx_gid=100,
        stx_rdev_major=1,
        stx_rdev_minor=3,
        stx_size=12345,
        stx_blksize=4096,
        stx_blocks=24,
        stx_atime_sec=1,
        stx_atime_nsec=2,
        stx_mtime_sec=3,
        stx_mtime_nsec=4,
        stx_ctime_sec=5,
        stx_ctime_nsec=6,
    )
    fields = STAT.unpack(stat_from_statx(stx))
    # new_encode_dev (include/linux/kdev_t.h): minor's low byte, major << 8, minor's rest << 12
    assert fields["st_dev"] == 0x23 | 8 << 8 | 0x100 << 12
    assert fields["st_rdev"] == 0x103
    assert (fields["st_ino"], fields["st_mode"], fields["st_nlink"]) == (77, 0o100644, 2)
    assert (fields["st_uid"], fields["st_gid"], fields["st_size"]) == (1000, 100, 12345)
    assert (fields["st_blksize"], fields["st_blocks"]) == (4096, 24)
    assert [fields[f"st_{t}time{s}"] for t in "amc" for s in ("", "_nsec")] == [1, 2, 3, 4, 5, 6]


def test_guest_statx_drops_mask_bits_it_cannot_carry() -> None:
    stx = STATX.unpack(bytes(256))
    stx["stx_mask"] = 0xFFFF
    assert STATX.unpack(guest_statx(stx))["stx_mask"] == STATX_KNOWN_MASK


AARCH64_MOVED = {  # arch/arm64/include/uapi/asm/fcntl.h
    "O_DIRECTORY": (0o40000, 0o200000),
    "O_NOFOLLOW": (0o100000, 0o400000),
    "O_DIRECT": (0o200000, 0o40000),
    "O_LARGEFILE": (0o400000, 0o100000),
}


@pytest.mark.parametrize("name", sorted(AARCH64_MOVED))
def test_aarch64_open_flags_are_swapped_both_ways(name: str) -> None:
    codec = OpenFlagCodec("aarch64")
    guest, host = AARCH64_MOVED[name]
    assert codec.to_host(guest | 0o2) == host | 0o2
    assert codec.to_guest(host | 0o2002) == guest | 0o2002


def test_aarch64_o_tmpfile_and_f_getfl_largefile() -> None:
    codec = OpenFlagCodec("aarch64")
    assert codec.to_host(0o20040000 | 0o2) == GENERIC_FLAGS["O_TMPFILE"] | 0o2
    # the host kernel reports its O_LARGEFILE in F_GETFL: the guest must see its own, not
    # O_NOFOLLOW (which has that value on aarch64)
    assert codec.to_guest(0o100000 | 0o2002) == 0o400000 | 0o2002


def test_riscv64_open_flags_pass_through() -> None:
    codec = OpenFlagCodec("riscv64")
    every = sum(GENERIC_FLAGS.values())
    assert codec.to_host(every) == every
    assert codec.to_guest(every) == every


def test_ioctl_struct_sizes_match_the_size_in_their_request_number() -> None:
    from qemuser.syscalls.ioctl import IN, OUT, REQUESTS, VALUE

    # FS_IOC_GETFLAGS/SETFLAGS are declared with `long` but the kernel moves an int; TIOCSIG
    # and FICLONE are declared _IOW(int) but take the int itself
    declared_long = {termios.FS_IOC_GETFLAGS, termios.FS_IOC_SETFLAGS}
    for number, request in REQUESTS.items():
        encoded_size = number >> 16 & 0x3FFF
        if number >> 30 and number not in declared_long and request.passing != VALUE:
            assert request.layout is not None, request.name
            assert request.layout.size == encoded_size, request.name
        if request.passing in (IN, OUT):
            assert request.layout is not None, request.name


def test_linux_dirent64_records_keep_their_lengths() -> None:
    from qemuser.syscalls.abi.dirent import DIRENT64, guest_dirents

    assert DIRENT64.size == 19
    assert DIRENT64.offsets == {"d_ino": 0, "d_off": 8, "d_reclen": 16, "d_type": 18}
    first = DIRENT64.pack(d_ino=5, d_off=1, d_reclen=24, d_type=4) + b".\0" + bytes(3)
    second = DIRENT64.pack(d_ino=9, d_off=2, d_reclen=32, d_type=8) + b"file.txt\0" + bytes(4)
    assert guest_dirents(first + second) == first + second
