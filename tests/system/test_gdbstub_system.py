"""The system-mode GDB stub (-s, -S, -gdb): gdb-multiarch attached to a machine started stopped
reads the reset pc, steps, breaks and continues on both arches, sees the vCPUs as threads and
the system registers, reads memory through the guest's MMU and physically; a small protocol
client checks Ctrl-C, QMP's run state after GDB's continue, and kill. The address walkers
are checked against page tables written by hand."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.guest.test_gdbstub import RemoteClient
from tests.system.conftest import BIN, fixture, run_system

GDB = shutil.which("gdb-multiarch")
needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb-multiarch is not installed (./setup.sh)")
TIMEOUT = 60
ENTRY = {"aarch64": 0x4008_0000, "riscv64": 0x8000_0000}
GDB_ARCH = {"aarch64": "aarch64", "riscv64": "riscv:rv64"}
# the hello fixtures' loop: the store of each character to the UART, and the instruction after
STORE = {"aarch64": (0x4008_0010, 0x4008_0014), "riscv64": (0x8000_0014, 0x8000_0018)}
FIRST_WORD = {"aarch64": "0x01\t0x02\t0x00\t0x58", "riscv64": "0xb7\t0x02\t0x00\t0x10"}
KILLED = "Kill the program being debugged? (y or n) [answered Y; input not from terminal]"
SPIN = {"aarch64": "00000014", "riscv64": "6f000000"}  # `b .` / `j .`


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_args(arch: str, kernel: Path, firmware: bool = True) -> list[str]:
    """The board, and for riscv -bios none (the bare-metal fixture is the firmware) unless
    `firmware` is False (the built-in SBI runs it in S mode)."""
    bios = ["-bios", "none"] if arch == "riscv64" and firmware else []
    return ["-M", "virt", "-nographic", *bios, "-kernel", str(kernel)]


def start(arch: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / f"qemuser-system-{arch}"), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def debug(
    arch: str,
    commands: list[str],
    *extra: str,
    kernel: Path | None = None,
    firmware: bool = True,
) -> tuple[list[str], subprocess.CompletedProcess]:
    """Start the hello fixture with -gdb tcp::PORT -S, run gdb-multiarch's batch `commands`
    against it: gdb's output lines (without its start-up chatter) and the machine's result."""
    port = free_port()
    kernel = kernel or fixture(f"hello-{arch}.elf")
    args = machine_args(arch, kernel, firmware)
    machine = start(arch, *args, "-gdb", f"tcp::{port}", "-S", *extra)
    try:
        gdb = subprocess.run(
            [str(GDB), "-nx", "-batch", "-ex", f"set architecture {GDB_ARCH[arch]}",
             "-ex", f"target remote 127.0.0.1:{port}",
             *[arg for command in commands for arg in ("-ex", command)]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        stdout, stderr = machine.communicate(timeout=TIMEOUT)
    finally:
        if machine.poll() is None:
            machine.kill()
            machine.wait()
    chatter = ("The target architecture", "warning: No executable", "determining executable")
    lines = [line for line in gdb.stdout.splitlines() if line and not line.startswith(chatter)]
    return lines, subprocess.CompletedProcess(machine.args, machine.returncode, stdout, stderr)


@needs_gdb
@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_reset_pc_step_break_and_continue(arch: str) -> None:
    entry = ENTRY[arch]
    store, after = STORE[arch]
    lines, machine = debug(
        arch,
        ["p/x $pc", "stepi", "p/x $pc", f"break *{store:#x}", "continue", "p/x $pc", "stepi",
         "p/x $pc", "continue", "delete", "continue"],
    )  # fmt: skip
    # the reset pc: -S holds the machine before its first instruction
    assert lines == [
        f"0x{entry:016x} in ?? ()",
        f"$1 = {entry:#x}",
        f"0x{entry + 4:016x} in ?? ()",
        f"$2 = {entry + 4:#x}",
        f"Breakpoint 1 at {store:#x}",
        f"Breakpoint 1, 0x{store:016x} in ?? ()",
        f"$3 = {store:#x}",
        f"0x{after:016x} in ?? ()",
        f"$4 = {after:#x}",
        f"Breakpoint 1, 0x{store:016x} in ?? ()",
        "[Inferior 1 (process 1) exited normally]",  # the guest powered off: W00
    ]
    assert machine.stdout == f"hello from {arch} virt\n".encode()
    assert machine.returncode == 0


@needs_gdb
def test_watchpoint_stops_before_the_access_and_steps_over_it() -> None:
    msg = 0x4008_0024  # "hello from aarch64 virt": the loop's `ldrb w3, [x2], #1` reads it
    lines, machine = debug(
        "aarch64",
        [f"rwatch *(char*){msg + 12:#x}", "continue", "p/x $pc", "p/x $x2", "delete",
         "continue"],
    )  # fmt: skip
    assert lines == [
        "0x0000000040080000 in ?? ()",
        f"Hardware read watchpoint 1: *(char*){msg + 12:#x}",
        f"Hardware read watchpoint 1: *(char*){msg + 12:#x}",
        "Value = 97 'a'",
        "0x000000004008000c in ?? ()",  # GDB stepped over the load (non-steppable watchpoints)
        "$1 = 0x4008000c",
        f"$2 = {msg + 13:#x}",
        "[Inferior 1 (process 1) exited normally]",
    ]
    assert machine.stdout == b"hello from aarch64 virt\n"


@needs_gdb
def test_system_registers_and_vcpus_as_threads() -> None:
    lines, machine = debug(
        "aarch64",
        ["p/x $cpsr", "p $CurrentEL", "p/x $SCTLR_EL1 & 1", "p/x $VBAR_EL1", "info threads",
         "thread 2", "p/x $pc", "thread 1", "p/x $pc", "kill"],
        "-smp", "2",
    )  # fmt: skip
    assert lines[:4] == [
        "0x0000000040080000 in ?? ()",
        "$1 = 0x400003c5",  # the whole PSTATE: EL1h, D A I F masked (and Z from reset)
        "$2 = 4",  # CurrentEL: EL1 in bits 3:2
        "$3 = 0x0",  # the MMU is off
    ]
    assert lines[4:] == [
        "$4 = 0x0",
        "  Id   Target Id                    Frame ",
        "* 1    Thread 1.1 (CPU#0 [running]) 0x0000000040080000 in ?? ()",
        "  2    Thread 1.2 (CPU#1 [halted ]) 0x0000000000000000 in ?? ()",  # PSCI: off
        "[Switching to thread 2 (Thread 1.2)]",
        "#0  0x0000000000000000 in ?? ()",
        "$5 = 0x0",
        "[Switching to thread 1 (Thread 1.1)]",
        "#0  0x0000000040080000 in ?? ()",
        "$6 = 0x40080000",
        KILLED,
        "[Inferior 1 (process 1) killed]",
    ]
    assert machine.returncode == 0  # QEMU: GDB's kill ends the machine
    assert machine.stdout == b""


@needs_gdb
def test_riscv_privilege_and_csrs() -> None:
    lines, machine = debug("riscv64", ["p $priv", "p/x $misa", "p/x $mhartid", "kill"])
    assert lines == [
        "0x0000000080000000 in ?? ()",
        "$1 = 3",  # M mode: -bios none runs the kernel as the firmware would be run
        "$2 = 0x800000000014112d",  # RV64 IMAFDCSU
        "$3 = 0x0",
        KILLED,
        "[Inferior 1 (process 1) killed]",
    ]
    assert machine.returncode == 0


@needs_gdb
def test_memory_through_the_mmu_and_physical_mode() -> None:
    # GDB writes an aarch64 4K-granule table (39-bit VAs, level 1 first): VA 8 GiB is a 1 GiB
    # block onto RAM at 0x40000000, and turns the MMU on; memory is then read through it.
    lines, machine = debug(
        "aarch64",
        ["set {unsigned long}0x40100040 = 0x40000401", "set $TTBR0_EL1 = 0x40100000",
         "set $TCR_EL1 = 25", "set $SCTLR_EL1 = $SCTLR_EL1 | 1",
         "x/4xb 0x200080000", "x/4xb 0x40080000",
         "maintenance packet qqemu.PhyMemMode", "maintenance packet Qqemu.PhyMemMode:1",
         "x/4xb 0x40080000", "x/4xb 0x200080000", "maintenance packet Qqemu.PhyMemMode:2",
         "kill"],
    )  # fmt: skip
    assert lines == [
        "0x0000000040080000 in ?? ()",
        f"0x200080000:\t{FIRST_WORD['aarch64']}",
        "0x40080000:\tCannot access memory at address 0x40080000",  # no mapping for it now
        "sending: qqemu.PhyMemMode",
        'received: "0"',
        "sending: Qqemu.PhyMemMode:1",
        'received: "OK"',
        f"0x40080000:\t{FIRST_WORD['aarch64']}",
        "0x200080000:\tCannot access memory at address 0x200080000",  # no such RAM
        "sending: Qqemu.PhyMemMode:2",
        'received: "E16"',
        KILLED,
        "[Inferior 1 (process 1) killed]",
    ]
    assert machine.returncode == 0


@needs_gdb
def test_riscv_memory_through_sv39() -> None:
    # a 1 GiB Sv39 leaf at VA 1 GiB onto RAM at 0x80000000, seen from S mode
    lines, _ = debug(
        "riscv64",
        ["set {unsigned long}0x80100008 = 0x200000cf", "set $satp = 0x8000000000080100",
         "set $priv = 1", "x/4xb 0x40000000", "set $priv = 3", "x/4xb 0x40000000", "kill"],
    )  # fmt: skip
    assert lines == [
        "0x0000000080000000 in ?? ()",
        f"0x40000000:\t{FIRST_WORD['riscv64']}",
        "0x40000000:\t0xff\t0xff\t0xff\t0xff",  # M mode: the physical address (flash)
        KILLED,
        "[Inferior 1 (process 1) killed]",
    ]


def connect(port: int, machine: subprocess.Popen) -> RemoteClient:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            return RemoteClient(sock)
        except ConnectionRefusedError:
            assert machine.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)


def qmp_command(path: Path, command: str) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        for _ in range(200):
            if path.exists():
                break
            time.sleep(0.05)
        sock.connect(str(path))
        reader = sock.makefile("rb")
        reader.readline()  # the greeting
        sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        reader.readline()
        sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        while True:
            reply = json.loads(reader.readline())
            if "event" not in reply:
                return reply


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_ctrl_c_stops_a_running_guest_and_continue_starts_the_machine(
    arch: str, tmp_path: Path
) -> None:
    port, qmp = free_port(), tmp_path / "qmp.sock"
    kernel = fixture(f"hello-{arch}.elf")
    machine = start(arch, *machine_args(arch, kernel), "-gdb", f"tcp::{port}", "-S",
                    "-qmp", f"unix:{qmp},server=on,wait=off")  # fmt: skip
    try:
        assert qmp_command(qmp, "query-status")["return"]["status"] == "prelaunch"
        gdb = connect(port, machine)
        assert gdb.ask(b"?") == b"T05thread:1;"
        entry = ENTRY[arch]
        original = gdb.ask(b"m%x,4" % entry)
        assert gdb.ask(b"M%x,4:%s" % (entry, SPIN[arch].encode())) == b"OK"  # spin there
        gdb.send(b"c")
        time.sleep(0.3)
        # GDB's continue started the machine, as the monitor's `cont` would
        assert qmp_command(qmp, "query-status")["return"] == {
            "running": True, "singlestep": False, "status": "running"
        }  # fmt: skip
        gdb.sock.sendall(b"\x03")
        assert gdb.reply() == b"T02thread:1;"  # SIGINT
        assert gdb.ask(b"qfThreadInfo") == b"m1"
        assert gdb.ask(b"qC") == b"QC1"
        pc_number = {"aarch64": 32, "riscv64": 32}[arch]
        pc = int.from_bytes(bytes.fromhex(gdb.ask(b"p%x" % pc_number).decode()), "little")
        assert pc == entry
        assert gdb.ask(b"M%x,4:%s" % (entry, original)) == b"OK"
        gdb.send(b"c")
        assert gdb.reply() == b"W00"  # the guest powered off
        stdout, _ = machine.communicate(timeout=TIMEOUT)
    finally:
        if machine.poll() is None:
            machine.kill()
            machine.wait()
    assert stdout == f"hello from {arch} virt\n".encode()
    assert machine.returncode == 0


def test_detach_lets_the_machine_run_on() -> None:
    port = free_port()
    machine = start("aarch64", *machine_args("aarch64", fixture("hello-aarch64.elf")),
                    "-gdb", f"tcp::{port}", "-S")  # fmt: skip
    try:
        gdb = connect(port, machine)
        assert gdb.ask(b"Z0,40080010,4") == b"OK"
        assert gdb.ask(b"c") == b"T05thread:1;"
        assert gdb.ask(b"D") == b"OK"  # breakpoints go with GDB; the guest runs to its end
        stdout, _ = machine.communicate(timeout=TIMEOUT)
    finally:
        if machine.poll() is None:
            machine.kill()
            machine.wait()
    assert stdout == b"hello from aarch64 virt\n"
    assert machine.returncode == 0


def test_s_listens_on_1234_without_stopping() -> None:
    # -s without -S: the machine does not wait for GDB (port 1234 may be taken: then the
    # message is QEMU's)
    result = run_system("aarch64", *machine_args("aarch64", fixture("hello-aarch64.elf")), "-s")
    if result.returncode == 1:
        assert result.stderr == (
            "qemuser-system-aarch64: -s: Failed to bind socket: Address already in use\n"
        )
    else:
        assert (result.returncode, result.stdout) == (0, "hello from aarch64 virt\n")


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("foo", "-gdb foo: 'foo' is not a valid char driver"),
        ("udp::5", "-gdb udp::5: 'udp' is not a valid char driver"),
        ("unix:", "-gdb unix:: Unable to parse FD number "),
        ("tcp::99999", "-gdb tcp::99999: Failed to parse port '99999'"),
        ("tcp:1.2.3.4:5",
         "-gdb tcp:1.2.3.4:5: Failed to bind socket: Cannot assign requested address"),
        ("unix:/nonexistent/gdb.sock,server=on,wait=off",
         "-gdb unix:/nonexistent/gdb.sock,server=on,wait=off: Failed to bind socket to "
         "/nonexistent/gdb.sock: No such file or directory"),
    ],
)  # fmt: skip
def test_bad_gdb_device_is_one_line_in_qemus_words(device: str, message: str) -> None:
    result = run_system("aarch64", "-M", "virt", "-nographic", "-gdb", device, "-kernel",
                        str(fixture("hello-aarch64.elf")))  # fmt: skip
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"qemuser-system-aarch64: {message}\n"


def test_gdb_none_runs_without_a_stub() -> None:
    result = run_system("aarch64", *machine_args("aarch64", fixture("hello-aarch64.elf")),
                        "-gdb", "none")  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "hello from aarch64 virt\n")


# ---- the walkers, against tables written by hand ---------------------------------------------


def _machine(arch: str):  # noqa: ANN202 - a Machine (imported here to keep collection light)
    from qemuser.system.boards import BOARDS
    from qemuser.system.machine import Machine, MachineConfig

    return Machine(MachineConfig(board=BOARDS[arch]["virt"], ram_size=128 << 20), io.BytesIO())


def _put(uc, address: int, value: int) -> None:  # noqa: ANN001
    uc.mem_write(address, struct.pack("<Q", value))


@pytest.mark.parametrize(
    ("granule", "tg0", "tg1"), [(12, 0, 2), (14, 2, 1), (16, 1, 3)], ids=["4K", "16K", "64K"]
)
def test_aarch64_walk_of_each_granule(granule: int, tg0: int, tg1: int) -> None:
    from qemuser.system.gdbstub import (
        SCTLR_EL1,
        TCR_EL1,
        TTBR0_EL1,
        TTBR1_EL1,
        _CpRegs,
        aarch64_translate,
    )

    machine = _machine("aarch64")
    uc = machine.uc
    page = 1 << granule
    stride = granule - 3
    tsz = 64 - 48 if granule != 16 else 64 - 42  # 48-bit VAs (42 with 64K: 2 levels + page)
    inputsize = 64 - tsz
    levels = -(-(inputsize - granule) // stride)
    ram = 0x4000_0000
    tables = [ram + 0x10_0000 + i * page for i in range(levels)]  # one table per level
    upper_tables = [ram + 0x20_0000 + i * page for i in range(levels)]
    vaddr, target = 0x12_3456_7000 & ((1 << inputsize) - 1), ram + 0x30_0000
    vaddr -= vaddr % page
    for base, va in ((tables, vaddr), (upper_tables, vaddr)):
        for level in range(levels):
            shift = granule + stride * (levels - 1 - level)
            index = va >> shift & ((1 << stride) - 1)
            if level == levels - 1:
                _put(uc, base[level] + 8 * index, target | 0x403)  # a page, AF
            else:
                _put(uc, base[level] + 8 * index, base[level + 1] | 3)  # a table
    _CpRegs.write(uc, TTBR0_EL1, tables[0])
    _CpRegs.write(uc, TTBR1_EL1, upper_tables[0])
    _CpRegs.write(uc, TCR_EL1, tsz | tg0 << 14 | tsz << 16 | tg1 << 30)
    assert aarch64_translate(uc, vaddr + 0x123) == vaddr + 0x123  # MMU still off
    _CpRegs.write(uc, SCTLR_EL1, _CpRegs.read(uc, SCTLR_EL1) | 1)
    assert aarch64_translate(uc, vaddr + 0x123) == target + 0x123
    upper = ((1 << 64) - (1 << inputsize)) | vaddr
    assert aarch64_translate(uc, upper + 8) == target + 8
    assert aarch64_translate(uc, vaddr + page) is None  # nothing mapped there
    assert aarch64_translate(uc, 1 << 60) is None  # neither TTBR's range


@pytest.mark.parametrize(
    ("mode", "levels"), [(8, 3), (9, 4), (10, 5)], ids=["Sv39", "Sv48", "Sv57"]
)
def test_riscv_walk_of_each_mode(mode: int, levels: int) -> None:
    from unicorn import riscv_const as rv

    from qemuser.system.gdbstub import _riscv_csr_write, riscv_translate

    machine = _machine("riscv64")
    uc = machine.uc
    ram = 0x8000_0000
    tables = [ram + 0x10_0000 + i * 0x1000 for i in range(levels)]
    vaddr, target = 0x5_4321_F000, ram + 0x30_0000
    for level in range(levels):
        index = vaddr >> (12 + 9 * (levels - 1 - level)) & 0x1FF
        if level == levels - 1:
            _put(uc, tables[level] + 8 * index, target >> 12 << 10 | 0xCF)  # leaf: VRWXAD
        else:
            _put(uc, tables[level] + 8 * index, tables[level + 1] >> 12 << 10 | 1)
    _riscv_csr_write(rv.UC_RISCV_REG_SATP)(uc, mode << 60 | tables[0] >> 12)
    assert riscv_translate(uc, vaddr + 0x42) == vaddr + 0x42  # M mode: physical
    uc.reg_write(rv.UC_RISCV_REG_PRIV, 1)
    assert riscv_translate(uc, vaddr + 0x42) == target + 0x42
    assert riscv_translate(uc, vaddr + 0x1000) is None
    # a 2 MiB superpage one level up keeps the low 21 bits of the address
    index = vaddr >> 21 & 0x1FF
    _put(uc, tables[levels - 2] + 8 * index, ram >> 12 << 10 | 0xCF)
    assert riscv_translate(uc, vaddr + 0x42) == ram + (vaddr & 0x1F_FFFF) + 0x42


# ---- Debian's kernel ------------------------------------------------------------------------


@pytest.mark.slow
def test_debian_kernel_entry_break_and_its_code_through_the_mmu() -> None:
    """Break at the entry of Debian's arm64 kernel, let it run until it turned its MMU on,
    Ctrl-C, and read the code at its (virtual) pc: the same bytes as physically, where the
    loaded Image holds that address."""
    from tests.system.debian import arm64_kernel

    kernel = arm64_kernel()
    image = kernel.read_bytes()
    port = free_port()
    machine = start("aarch64", "-M", "virt", "-m", "512", "-nographic", "-no-reboot",
                    "-kernel", str(kernel), "-append", "console=ttyAMA0 panic=-1 nokaslr",
                    "-gdb", f"tcp::{port}", "-S")  # fmt: skip
    try:
        gdb = connect(port, machine)
        assert gdb.ask(b"?") == b"T05thread:1;"
        registers = bytes.fromhex(gdb.ask(b"g").decode())
        entry = int.from_bytes(registers[32 * 8 : 33 * 8], "little")
        assert bytes.fromhex(gdb.ask(b"m%x,40" % entry).decode()) == image[:0x40]
        assert gdb.ask(b"s").startswith(b"T05")
        pc = int.from_bytes(bytes.fromhex(gdb.ask(b"p20").decode()), "little")
        assert pc == entry + 4  # the Image's first instruction (`add`, the "MZ" magic)
        branch = int.from_bytes(image[4:8], "little")  # `b primary_entry`
        assert branch >> 26 == 0b000101
        offset = (branch & 0x3FF_FFFF) - (branch & 0x200_0000) * 2  # imm26, signed
        target = pc + 4 * offset
        assert gdb.ask(b"Z0,%x,4" % target) == b"OK"
        assert gdb.ask(b"c") == b"T05thread:1;"
        assert int.from_bytes(bytes.fromhex(gdb.ask(b"p20").decode()), "little") == target
        assert gdb.ask(b"z0,%x,4" % target) == b"OK"
        gdb.send(b"c")
        time.sleep(1)  # the MMU is on within milliseconds; the boot ends in seconds
        gdb.sock.sendall(b"\x03")
        assert gdb.reply() == b"T02thread:1;"
        pc = int.from_bytes(bytes.fromhex(gdb.ask(b"p20").decode()), "little")
        assert pc >> 48 == 0xFFFF  # a kernel virtual address
        code = bytes.fromhex(gdb.ask(b"m%x,20" % pc).decode())
        # nokaslr (-cpu max's RNDR would seed KASLR): the kernel runs where it is linked, its
        # first byte at KIMAGE_VADDR (6.1, 48-bit VAs), which is the Image loaded at `entry`
        text = 0xFFFF_8000_0800_0000
        assert text <= pc < text + len(image)
        assert gdb.ask(b"Qqemu.PhyMemMode:1") == b"OK"
        assert bytes.fromhex(gdb.ask(b"m%x,20" % (entry + pc - text)).decode()) == code
        assert gdb.ask(b"m%x,4" % pc) == b"E0e"  # no such physical address
        gdb.send(b"k")
        machine.wait(timeout=TIMEOUT)
    finally:
        if machine.poll() is None:
            machine.kill()
            machine.wait()
    assert machine.returncode == 0
    assert os.path.exists(kernel)


@pytest.mark.slow
def test_gdb_attaching_stops_a_running_kernel_and_detach_lets_it_go_on() -> None:
    """Without -S the machine runs at once; GDB connecting stops it (no stop reply until GDB
    asks), Ctrl-C stops it again, and detaching lets the boot finish."""
    from tests.system.debian import arm64_kernel

    port = free_port()
    machine = start("aarch64", "-M", "virt", "-m", "512", "-nographic", "-no-reboot",
                    "-kernel", str(arm64_kernel()), "-append", "console=ttyAMA0 panic=-1",
                    "-gdb", f"tcp::{port}")  # fmt: skip
    try:
        time.sleep(1)  # booting
        gdb = connect(port, machine)
        assert gdb.ask(b"?") == b"T05thread:1;"
        pc = int.from_bytes(bytes.fromhex(gdb.ask(b"p20").decode()), "little")
        assert pc >> 48 == 0xFFFF  # in the kernel, its MMU on
        gdb.send(b"c")
        time.sleep(0.3)
        gdb.sock.sendall(b"\x03")
        assert gdb.reply() == b"T02thread:1;"
        assert gdb.ask(b"D") == b"OK"
        stdout, _ = machine.communicate(timeout=300)
    finally:
        if machine.poll() is None:
            machine.kill()
            machine.wait()
    assert b"Kernel panic - not syncing: VFS: Unable to mount root fs" in stdout
    assert machine.returncode == 0


@needs_gdb
def test_a_secondary_vcpu_hits_a_breakpoint_and_steps() -> None:
    # the smp fixture: CPU 0 starts CPUs 1-3 (PSCI CPU_ON) at `secondary`
    secondary = 0x4008_0174
    lines, machine = debug(
        "aarch64",
        [f"break *{secondary:#x}", "continue", "p/x $pc", "stepi", "p/x $pc", "delete",
         "continue"],
        "-smp", "4", kernel=fixture("smp-aarch64.elf"),
    )  # fmt: skip
    assert lines == [
        "0x0000000040080000 in ?? ()",
        f"Breakpoint 1 at {secondary:#x}",
        "[Switching to Thread 1.2]",
        f"Thread 2 hit Breakpoint 1, 0x{secondary:016x} in ?? ()",
        f"$1 = {secondary:#x}",
        f"0x{secondary + 4:016x} in ?? ()",
        f"$2 = {secondary + 4:#x}",
        "[Inferior 1 (process 1) exited normally]",
    ]
    assert machine.stdout.decode().splitlines() == [
        f"cpu {n} mpidr {n} sgi-from {n}" for n in range(4)
    ]


@needs_gdb
def test_a_secondary_hart_hits_a_breakpoint_in_s_mode() -> None:
    # the riscv smp fixture under the built-in SBI: hart 0 starts the others (hart_start) at
    # `secondary`; the machine resets at QEMU's reset vector, 0x1000
    secondary = 0x8020_00E8
    lines, machine = debug(
        "riscv64",
        [f"break *{secondary:#x}", "continue", "p $priv", "p/x $mhartid", "stepi", "p/x $pc",
         "delete", "continue"],
        "-smp", "4", kernel=fixture("smp-riscv64.elf"), firmware=False,
    )  # fmt: skip
    assert lines == [
        "0x0000000000001000 in ?? ()",
        f"Breakpoint 1 at {secondary:#x}",
        "[Switching to Thread 1.2]",
        f"Thread 2 hit Breakpoint 1, 0x{secondary:016x} in ?? ()",
        "$1 = 1",  # S mode
        "$2 = 0x1",
        f"0x{secondary + 4:016x} in ?? ()",
        f"$3 = {secondary + 4:#x}",
        "[Inferior 1 (process 1) exited normally]",
    ]
    assert machine.stdout == b"hart 1: seen\nhart 2: seen\nhart 3: seen\nall stopped\n"
