"""File-system structs at work (their sizes and offsets are in test_abi_layouts.py), ioctl
request numbers, and the open-flag translation against the kernel headers they cite."""

import pytest

from qemuser.syscalls.abi import termbits
from qemuser.syscalls.abi.filecontrol import GENERIC_FLAGS, OpenFlagCodec
from qemuser.syscalls.abi.filestat import (
    STAT,
    STATX,
    STATX_KNOWN_MASK,
    guest_statx,
    stat_from_statx,
)


def test_terminal_requests() -> None:
    # _IOR/_IOW requests, as the C preprocessor expands them for these targets
    assert termbits.TCGETS2 == 0x802C542A
    assert termbits.TCSETSF2 == 0x402C542D
    assert termbits.TIOCGPTN == 0x80045430
    assert termbits.TIOCSPTLCK == 0x40045431
    assert termbits.TIOCGPTPEER == 0x5441


def test_stat_from_statx_fills_every_field() -> None:
    stx = STATX.unpack(bytes(256))._replace(
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
    st = STAT.unpack(stat_from_statx(stx))
    # new_encode_dev (include/linux/kdev_t.h): minor's low byte, major << 8, minor's rest << 12
    assert st.st_dev == 0x23 | 8 << 8 | 0x100 << 12
    assert st.st_rdev == 0x103
    assert (st.st_ino, st.st_mode, st.st_nlink) == (77, 0o100644, 2)
    assert (st.st_uid, st.st_gid, st.st_size) == (1000, 100, 12345)
    assert (st.st_blksize, st.st_blocks) == (4096, 24)
    times = (st.st_atime, st.st_atime_nsec, st.st_mtime, st.st_mtime_nsec)
    assert times + (st.st_ctime, st.st_ctime_nsec) == (1, 2, 3, 4, 5, 6)


def test_guest_statx_drops_mask_bits_it_cannot_carry() -> None:
    stx = STATX.unpack(bytes(256))._replace(stx_mask=0xFFFF, stx_ino=3)
    shown = STATX.unpack(guest_statx(stx))
    assert (shown.stx_mask, shown.stx_ino) == (STATX_KNOWN_MASK, 3)


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
    declared_long = {termbits.FS_IOC_GETFLAGS, termbits.FS_IOC_SETFLAGS}
    for number, request in REQUESTS.items():
        encoded_size = number >> 16 & 0x3FFF
        if number >> 30 and number not in declared_long and request.passing != VALUE:
            assert request.layout is not None, request.name
            assert request.layout.size == encoded_size, request.name
        if request.passing in (IN, OUT):
            assert request.layout is not None, request.name


def test_linux_dirent64_records_keep_their_lengths() -> None:
    from qemuser.syscalls.abi.dirent import DIRENT64, guest_dirents

    first = DIRENT64.pack(d_ino=5, d_off=1, d_reclen=24, d_type=4) + b".\0" + bytes(3)
    second = DIRENT64.pack(d_ino=9, d_off=2, d_reclen=32, d_type=8) + b"file.txt\0" + bytes(4)
    assert guest_dirents(first + second) == first + second
