"""-semihosting on both virt boards: the semihost fixture's output, file and exit status, each
compared by hand with qemu-system-aarch64/riscv64 7.2 running it with the same options
(aarch64 with -cpu cortex-a57: QEMU's default CPU there is 32-bit)."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest
from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc

from qemuser.system.semihosting import (
    SYS_CLOCK,
    SYS_CLOSE,
    SYS_ELAPSED,
    SYS_ERRNO,
    SYS_EXIT,
    SYS_EXIT_EXTENDED,
    SYS_GET_CMDLINE,
    SYS_HEAPINFO,
    SYS_ISERROR,
    SYS_ISTTY,
    SYS_OPEN,
    SYS_READC,
    SYS_REMOVE,
    SYS_RENAME,
    SYS_SYSTEM,
    SYS_TICKFREQ,
    SYS_TIME,
    SYS_TMPNAM,
    SYS_WRITEC,
    Semihosting,
    SemihostingConfig,
    UnsupportedCall,
)
from tests.system.conftest import BIN, fixture

ARCHES = ["aarch64", "riscv64"]


def run_in(cwd: Path, arch: str, *args: str) -> subprocess.CompletedProcess[str]:
    """qemuser-system-ARCH in `cwd`, where the guest's relative host file names go."""
    return subprocess.run(
        [str(BIN / f"qemuser-system-{arch}"), "-M", "virt", "-nographic", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def guest_lines(cmdline: str) -> str:
    """What the fixture prints with SYS_WRITE0 (QEMU sends that to its stderr)."""
    return (
        "semihosting: start\n"
        "0\n"  # SYS_WRITE on ":tt": no byte left unwritten
        f"cmdline: {cmdline}\n"
        "bad pointer: -1, errno 14\n"  # a name with no memory behind it: EFAULT
        "flen: 14\n"
        "read: file contents\n"
        "left: 49\n"  # SYS_READ of 63 bytes from a 14-byte file
    )


@pytest.mark.parametrize("arch", ARCHES)
def test_semihosting_console_cmdline_file_and_exit_status(arch: str, tmp_path: Path) -> None:
    elf = fixture(f"semihost-{arch}.elf")
    result = run_in(
        tmp_path, arch, "-bios", "none", "-semihosting-config", "enable=on,target=native",
        "-kernel", str(elf), "-append", "one two",
    )  # fmt: skip
    # ":tt" opened for writing is the host's stdout; SYS_WRITE0 goes to stderr.
    assert result.stdout == "written to :tt\n"
    assert result.stderr == guest_lines(f"{elf} one two")
    assert result.returncode == 3  # SYS_EXIT_EXTENDED, ADP_Stopped_ApplicationExit, 3
    assert (tmp_path / "semihost.txt").read_text() == "file contents\n"


def test_semihosting_args_accumulate_as_qemus(tmp_path: Path) -> None:
    elf = fixture("semihost-aarch64.elf")
    result = run_in(
        tmp_path, "aarch64", "-semihosting", "-semihosting-config", "arg=a,arg=b",
        "-semihosting-config", "arg=c", "-kernel", str(elf),
    )  # fmt: skip
    assert result.stderr == guest_lines("a b a b c")  # QEMU 7.2 repeats the merged arg= list
    assert result.returncode == 3


def test_semihosting_console_chardev(tmp_path: Path) -> None:
    elf = fixture("semihost-riscv64.elf")
    log = tmp_path / "semi.txt"
    result = run_in(
        tmp_path, "riscv64", "-bios", "none", "-chardev", f"file,id=sh,path={log}",
        "-semihosting-config", "enable=on,chardev=sh", "-kernel", str(elf),
    )  # fmt: skip
    assert (result.stdout, result.stderr, result.returncode) == ("written to :tt\n", "", 3)
    assert log.read_text() == guest_lines(str(elf))


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("aarch64", "guest exception 1 with no EL1 vector table at pc 0x40080020"),
        ("riscv64", "guest trap (cause 0x3) with no mtvec at pc 0x80000014"),
    ],
)
def test_without_semihosting_the_trap_is_the_guests(
    arch: str, message: str, tmp_path: Path
) -> None:
    elf = fixture(f"semihost-{arch}.elf")
    for extra in ([], ["-semihosting-config", "enable=off"]):
        result = run_in(tmp_path, arch, "-bios", "none", *extra, "-kernel", str(elf))
        assert result.stderr == f"qemuser-system-{arch}: {message}\n"
        assert result.returncode == 1
    assert not (tmp_path / "semihost.txt").exists()


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("foo=1", "-semihosting-config foo=1: Invalid parameter 'foo'"),
        (
            "enable=maybe",
            "-semihosting-config enable=maybe: Parameter 'enable' expects 'on' or 'off'",
        ),
        (
            "target=bogus",
            "-semihosting-config target=bogus: unsupported semihosting-config target=bogus",
        ),
        (
            "enable=on,target=gdb",
            "-semihosting-config enable=on,target=gdb: semihosting through GDB (target=gdb) "
            "is not supported by qemuser",
        ),
        ("enable=on,chardev=nope", "semihosting chardev 'nope' not found"),
    ],
)
def test_bad_semihosting_config_is_one_line(option: str, error: str, tmp_path: Path) -> None:
    elf = fixture("semihost-aarch64.elf")
    result = run_in(tmp_path, "aarch64", "-semihosting-config", option, "-kernel", str(elf))
    assert (result.stdout, result.stderr) == ("", f"qemuser-system-aarch64: {error}\n")
    assert result.returncode == 1


# --- the calls the fixture does not make, on an engine with RAM and no MMU -------------------
RAM = 0x4000_0000
BLOCK, BUF = RAM + 0x100, RAM + 0x800


class Console:
    """A chardev that records what it is given and has `pending` to read."""

    def __init__(self, pending: bytes = b"") -> None:
        self.written, self.pending = b"", pending

    def write(self, data: bytes) -> None:
        self.written += data

    def read(self) -> bytes:
        data, self.pending = self.pending, b""
        return data

    def wait_fds(self) -> list[int]:
        return []


def engine() -> Uc:
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.mem_map(RAM, 0x10000)
    return uc


def words(*values: int) -> bytes:
    return b"".join((v & (1 << 64) - 1).to_bytes(8, "little") for v in values)


def handler(**kw: object) -> tuple[Semihosting, list[int]]:
    stopped: list[int] = []
    semi = Semihosting(
        SemihostingConfig(enabled=True),
        cmdline=str(kw.get("cmdline", "kernel one")),
        ram=(RAM, 0x800_0000),
        stop=stopped.append,
        console=kw.get("console"),  # type: ignore[arg-type]
    )
    return semi, stopped


def test_heapinfo_is_qemus_split_of_ram() -> None:
    uc, (semi, _) = engine(), handler()
    uc.mem_write(BLOCK, words(BUF))
    assert semi.call(uc, SYS_HEAPINFO, BLOCK) == 0
    top = RAM + 0x800_0000
    assert uc.mem_read(BUF, 32) == words(RAM + 0x400_0000, top, top, RAM)


def test_iserror_istty_and_bad_handles(tmp_path: Path) -> None:
    uc, (semi, _) = engine(), handler()
    uc.mem_write(BLOCK, words(-5))
    assert semi.call(uc, SYS_ISERROR, BLOCK) == 1
    uc.mem_write(BLOCK, words(7))
    assert semi.call(uc, SYS_ISERROR, BLOCK) == 0
    uc.mem_write(BLOCK, words(42))  # no such handle
    assert semi.call(uc, SYS_ISTTY, BLOCK) == (1 << 64) - 1
    assert semi.call(uc, SYS_ERRNO, 0) == errno.EBADF
    name = str(tmp_path / "f").encode()
    uc.mem_write(BUF, name)
    uc.mem_write(BLOCK, words(BUF, 12, len(name)))  # mode 12: beyond "a+b"
    assert semi.call(uc, SYS_OPEN, BLOCK) == (1 << 64) - 1
    assert semi.call(uc, SYS_ERRNO, 0) == errno.EINVAL
    uc.mem_write(BLOCK, words(BUF, 0, len(name)))  # "r" of a file that is not there
    assert semi.call(uc, SYS_OPEN, BLOCK) == (1 << 64) - 1
    assert semi.call(uc, SYS_ERRNO, 0) == errno.ENOENT
    uc.mem_write(BLOCK, words(BUF, 4, len(name)))  # "w"
    handle = semi.call(uc, SYS_OPEN, BLOCK)
    uc.mem_write(BLOCK, words(handle))
    assert semi.call(uc, SYS_ISTTY, BLOCK) == 0
    assert semi.call(uc, SYS_CLOSE, BLOCK) == 0
    assert semi.call(uc, SYS_CLOSE, BLOCK) == (1 << 64) - 1  # closed already


def test_console_calls_use_the_chardev() -> None:
    uc = engine()
    console = Console(pending=b"xy")
    semi, _ = handler(console=console)
    uc.mem_write(BUF, b"A")
    assert semi.call(uc, SYS_WRITEC, BUF) == 0
    assert console.written == b"A"
    assert semi.call(uc, SYS_READC, 0) == ord("x")


def test_cmdline_too_long_and_clock_and_time() -> None:
    uc, (semi, _) = engine(), handler(cmdline="kernel one")
    uc.mem_write(BLOCK, words(BUF, 10))  # 10 bytes cannot hold "kernel one" and its NUL
    assert semi.call(uc, SYS_GET_CMDLINE, BLOCK) == (1 << 64) - 1
    uc.mem_write(BLOCK, words(BUF, 11))
    assert semi.call(uc, SYS_GET_CMDLINE, BLOCK) == 0
    assert uc.mem_read(BUF, 11) == b"kernel one\0"
    assert uc.mem_read(BLOCK + 8, 8) == words(10)
    before = int(time.time())
    assert before <= semi.call(uc, SYS_TIME, 0) <= int(time.time())
    assert 0 <= semi.call(uc, SYS_CLOCK, 0) < 1 << 32


@pytest.mark.parametrize(
    ("op", "reason", "subcode", "status"),
    [
        (SYS_EXIT, 0x20026, 0, 0),
        (SYS_EXIT, 0x20026, 5, 5),  # 64-bit SYS_EXIT takes a block, as SYS_EXIT_EXTENDED
        (SYS_EXIT, 0x20023, 0, 1),  # ADP_Stopped_RunTimeErrorUnknown
        (SYS_EXIT_EXTENDED, 0x20026, 0x1FF, 0xFF),
    ],
)
def test_exit_status(op: int, reason: int, subcode: int, status: int) -> None:
    uc, (semi, stopped) = engine(), handler()
    uc.mem_write(BLOCK, words(reason, subcode))
    semi.call(uc, op, BLOCK)
    assert stopped == [status]


def test_unknown_op_and_faulting_block() -> None:
    uc, (semi, stopped) = engine(), handler()
    with pytest.raises(UnsupportedCall, match="Unsupported SemiHosting SWI 0x99"):
        semi.call(uc, 0x99, BLOCK)
    assert semi.call(uc, SYS_EXIT_EXTENDED, 0xF000_0000) == (1 << 64) - 1  # no RAM there
    assert semi.call(uc, SYS_ERRNO, 0) == errno.EFAULT
    assert stopped == []


def test_file_management_calls(tmp_path: Path) -> None:
    """SYS_RENAME, SYS_REMOVE, SYS_TMPNAM and SYS_SYSTEM act on the host (target=native)."""
    uc, (semi, _) = engine(), handler()
    old, new = str(tmp_path / "old").encode(), str(tmp_path / "new").encode()
    (tmp_path / "old").write_bytes(b"kept")
    uc.mem_write(BUF, old + new)
    uc.mem_write(BLOCK, words(BUF, len(old), BUF + len(old), len(new)))
    assert semi.call(uc, SYS_RENAME, BLOCK) == 0
    assert (tmp_path / "new").read_bytes() == b"kept" and not (tmp_path / "old").exists()
    uc.mem_write(BLOCK, words(BUF + len(old), len(new)))
    assert semi.call(uc, SYS_REMOVE, BLOCK) == 0
    assert not (tmp_path / "new").exists()
    assert semi.call(uc, SYS_REMOVE, BLOCK) == (1 << 64) - 1
    assert semi.call(uc, SYS_ERRNO, 0) == errno.ENOENT
    uc.mem_write(BLOCK, words(BUF, 7, 64))
    assert semi.call(uc, SYS_TMPNAM, BLOCK) == 0
    name = bytes(uc.mem_read(BUF, 64)).split(b"\0")[0].decode()
    assert name.endswith(f"/qemu-{os.getpid():x}07")
    uc.mem_write(BLOCK, words(BUF, 7, 4))  # too short for the name
    assert semi.call(uc, SYS_TMPNAM, BLOCK) == (1 << 64) - 1
    command = f"echo ran > {tmp_path / 'ran'}; exit 3".encode()
    uc.mem_write(BUF, command)
    uc.mem_write(BLOCK, words(BUF, len(command)))
    assert semi.call(uc, SYS_SYSTEM, BLOCK) == 3 << 8  # system()'s wait status
    assert (tmp_path / "ran").read_text() == "ran\n"


def test_elapsed_ticks_grow_at_tickfreq() -> None:
    uc, (semi, _) = engine(), handler()
    assert semi.call(uc, SYS_TICKFREQ, 0) == 1_000_000_000
    assert semi.call(uc, SYS_ELAPSED, BLOCK) == 0
    first = int.from_bytes(uc.mem_read(BLOCK, 8), "little")
    time.sleep(0.01)
    assert semi.call(uc, SYS_ELAPSED, BLOCK) == 0
    assert int.from_bytes(uc.mem_read(BLOCK, 8), "little") - first >= 10_000_000
