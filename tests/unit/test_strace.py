"""-strace line formatting (syscalls/strace.py, syscalls/argkinds.py), without a CPU: a fake
process whose memory is a dict of guest address -> bytes."""

from __future__ import annotations

import struct

import pytest

from qemuser.loader.fault import GuestFault
from qemuser.syscalls.abi.filecontrol import OpenFlagCodec
from qemuser.syscalls.argkinds import (
    ACCESS_MODE,
    DIRFD,
    FD,
    INT,
    OCTAL,
    PATH,
    PTR,
    ULONG,
    ArgKind,
    Enum,
    Flags,
    InBuf,
    OutBuf,
    Ret,
    StructIn,
    StructOut,
    c_string_literal,
)
from qemuser.syscalls.registry import SyscallDef
from qemuser.syscalls.signames import signal_name
from qemuser.syscalls.strace import format_call, format_taken_signal, format_unknown_call

STRING_AT = 0x1000
BYTES_AT = 0x2000
UNMAPPED = 0xDEAD0000


class FakeMemory:
    def __init__(self, blocks: dict[int, bytes]) -> None:
        self.blocks = blocks

    def read(self, address: int, size: int) -> bytes:
        for start, data in self.blocks.items():
            if start <= address and address + size <= start + len(data):
                return data[address - start : address - start + size]
        raise GuestFault(address)

    def read_cstr(self, address: int, limit: int) -> bytes:
        for start, data in self.blocks.items():
            if start <= address < start + len(data):
                return data[address - start :].split(b"\0", 1)[0][:limit]
        raise GuestFault(address)


class FakeProcess:
    pid = 4242

    def __init__(self, arch: str = "aarch64") -> None:
        self.mem = FakeMemory(
            {
                STRING_AT: b"/etc/hostname\0",
                BYTES_AT: b'a\tb"c\\d\n\x01\xff' + b"x" * 100,
            }
        )
        self.open_codec = OpenFlagCodec(arch)


def line(
    kinds: tuple[ArgKind, ...],
    raw: tuple[int, ...],
    result: int | None,
    ret: str = Ret.INT,
    name: str = "call",
) -> str:
    sysdef = SyscallDef(name, lambda *_: 0, kinds, ret)
    return format_call(FakeProcess(), sysdef, raw, result)  # type: ignore[arg-type]


def test_string_literal_escapes_and_cuts() -> None:
    assert c_string_literal(b'a\tb"c\\d\n\x01\xff') == r'"a\tb\"c\\d\n\1\377"'
    assert c_string_literal(b"x" * 70) == '"' + "x" * 64 + '"...'
    assert c_string_literal(b"") == '""'


def test_success_line_with_pid_name_and_result() -> None:
    assert line((FD, InBuf(2), ULONG), (1, BYTES_AT, 3), 3, name="write") == (
        r'4242 write(1,"a\tb",3) = 3'
    )


def test_error_line_has_errno_number_name_and_text() -> None:
    text = line(
        (DIRFD, PATH, Flags({0o2000000: "O_CLOEXEC"}), OCTAL),
        ((-100) & (2**64 - 1), STRING_AT, 0o2000000, 0),
        -2,
        name="openat",
    )
    assert text == (
        '4242 openat(AT_FDCWD,"/etc/hostname",O_CLOEXEC,0)'
        " = -1 errno=2 (ENOENT: No such file or directory)"
    )


def test_unknown_errno_still_one_line() -> None:
    assert line((INT,), (5,), -5000) == "4242 call(5) = -5000"  # not an errno: a value
    assert line((INT,), (5,), -133) == (
        "4242 call(5) = -1 errno=133 (EHWPOISON: Memory page has hardware error)"
    )


@pytest.mark.parametrize(
    ("kind", "raw", "shown"),
    [
        (INT, 0xFFFF_FFFF, "-1"),
        (INT, 0x1_0000_0005, "5"),  # a C int: the upper half of the register is not the value
        (ULONG, 2**64 - 1, "18446744073709551615"),
        (PTR, 0, "NULL"),
        (PTR, 0x7FFF_F000, "0x7ffff000"),
        (DIRFD, 3, "3"),
        (OCTAL, 0o644, "0644"),
        (OCTAL, 0, "0"),
        (ACCESS_MODE, 0, "F_OK"),
        (ACCESS_MODE, 6, "R_OK|W_OK"),
        (Flags({1: "A", 2: "B"}), 0x13, "A|B|0x10"),
        (Flags({1: "A"}, octal=True), 0o101, "A|0100"),
        (Flags({8: "CLOSE"}, mask_field={0: "LOW", 1: "HIGH"}, field_mask=3), 9, "HIGH|CLOSE"),
        (Flags({8: "CLOSE"}, mask_field={0: "LOW"}, field_mask=3), 2, "0x2"),
        (Enum({0: "SEEK_SET", 1: "SEEK_CUR"}), 1, "SEEK_CUR"),
        (Enum({0: "SEEK_SET"}), 9, "9"),
        (PATH, 0, "NULL"),
        (PATH, UNMAPPED, "0xdead0000"),  # a bad pointer is shown, never followed
    ],
)
def test_argument_kinds(kind: ArgKind, raw: int, shown: str) -> None:
    assert line((kind,), (raw,), 0) == f"4242 call({shown}) = 0"


def test_in_buffer_shows_at_most_64_bytes() -> None:
    shown = line((InBuf(1), ULONG), (BYTES_AT + 11, 80), 80)
    assert shown == '4242 call("' + "x" * 64 + '"...,80) = 80'


def test_out_buffer_shows_what_the_call_returned_or_the_pointer_on_error() -> None:
    assert line((OutBuf(1), ULONG), (STRING_AT, 64), 4) == '4242 call("/etc",64) = 4'
    assert line((OutBuf(1), ULONG), (STRING_AT, 64), -14) == (
        "4242 call(0x1000,64) = -1 errno=14 (EFAULT: Bad address)"
    )


def test_structs_show_fields_after_success_only() -> None:
    def show(proc, address: int) -> str:
        return "{first=" + str(proc.mem.read(address, 1)[0]) + "}"

    assert line((StructOut(show),), (STRING_AT,), 0) == "4242 call({first=47}) = 0"
    assert line((StructOut(show),), (STRING_AT,), -1).startswith("4242 call(0x1000) = -1 ")
    assert line((StructIn(show),), (STRING_AT,), -1).startswith("4242 call({first=47}) = -1 ")
    assert line((StructIn(show),), (0,), 0) == "4242 call(NULL) = 0"
    assert line((StructIn(show),), (UNMAPPED,), 0) == "4242 call(0xdead0000) = 0"


def test_addresses_returned_in_hex_and_calls_that_do_not_return() -> None:
    assert line((PTR,), (0,), 0xAAAA_0000, ret=Ret.HEX, name="brk") == "4242 brk(NULL) = 0xaaaa0000"
    assert line((INT,), (7,), None, ret=Ret.NONE, name="exit_group") == "4242 exit_group(7)"


def test_a_broken_formatter_falls_back_to_hex() -> None:
    def broken(proc, address: int) -> str:
        raise RuntimeError("bug")

    assert line((StructIn(broken), INT), (0x1234, 1), 0) == "4242 call(0x1234,1) = 0"


def test_open_flags_of_the_guest_arch() -> None:
    from qemuser.syscalls.fs import OPEN_FLAGS

    aarch64_directory = 0o40000  # O_DIRECTORY on arm64, O_DIRECT in asm-generic
    assert line((OPEN_FLAGS,), (aarch64_directory | 0o2000000,), 3) == (
        "4242 call(O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 3"
    )


def test_every_line_is_one_line() -> None:
    shown = line((InBuf(1), ULONG), (BYTES_AT, 9), 9)
    assert "\n" not in shown


def test_unimplemented_call_line() -> None:
    assert format_unknown_call(7, 29, "ioctl", (1, 0x5401)) == (
        "7 ioctl(0x1,0x5401) = -1 errno=38 (ENOSYS: Function not implemented)"
    )
    assert format_unknown_call(7, 4000, None, (0,)) == (
        "7 syscall_4000(0x0) = -1 errno=38 (ENOSYS: Function not implemented)"
    )


def siginfo(signo: int, code: int, union: bytes) -> bytes:
    """A siginfo_t as the kernel lays it out: signo, errno, code, padding, union at 16."""
    head = struct.pack("<iiii", signo, 0, code, 0) + union
    return head + bytes(128 - len(head))


def test_taken_signal_lines_as_qemu_prints_them() -> None:
    assert format_taken_signal(siginfo(6, -6, struct.pack("<iI", 77, 1000))) == (
        "--- SIGABRT {si_signo=SIGABRT, si_code=SI_TKILL, si_pid=77, si_uid=1000} ---"
    )
    assert format_taken_signal(siginfo(11, 1, struct.pack("<Q", 0))) == (
        "--- SIGSEGV {si_signo=SIGSEGV, si_code=SEGV_MAPERR, si_addr=NULL} ---"
    )
    assert format_taken_signal(siginfo(7, 2, struct.pack("<Q", 0x4000))) == (
        "--- SIGBUS {si_signo=SIGBUS, si_code=BUS_ADRERR, si_addr=0x4000} ---"
    )
    assert format_taken_signal(siginfo(14, 0x80, b"")) == (
        "--- SIGALRM {si_signo=SIGALRM, si_code=SI_KERNEL} ---"
    )


@pytest.mark.parametrize(
    ("signo", "name"),
    [
        (1, "SIGHUP"),
        (6, "SIGABRT"),
        (10, "SIGUSR1"),
        (17, "SIGCHLD"),
        (31, "SIGSYS"),
        (34, "SIGRT_2"),
        (64, "SIGRT_32"),
        (99, "99"),
    ],
)
def test_signal_names(signo: int, name: str) -> None:
    assert signal_name(signo) == name
