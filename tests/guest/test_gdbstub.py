"""-g / QEMU_GDB: GDB debugs a guest through qemuser's remote stub.

gdb-multiarch drives the debugger's target fixture (gdb_target.c, built with -g -O0) on both
architectures; the Ctrl-C, detach and unix-socket cases speak the protocol directly.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tests.conftest import ARCHES, all_builds, fixture_path, qemuser, run_guest

GDB = shutil.which("gdb-multiarch")
needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb-multiarch is not installed (./setup.sh)")
TIMEOUT = 120
# the fixture's source lines the debugger shows
LINE_DOUBLED = "15\t    int doubled = value * 2;"
LINE_BAD_STORE = "41\t        *bad = 1;"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_guest(
    arch: str, program: Path, *args: str, where: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    options = [] if env and "QEMU_GDB" in env else ["-g", where]
    return subprocess.Popen(
        [qemuser(arch), *options, str(program), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def debug(
    arch: str,
    flavour: str,
    guest_args: tuple[str, ...],
    commands: list[str],
    name: str = "gdb_target",
    sysroot: bool = True,
    give_file: bool = True,
) -> tuple[list[str], subprocess.CompletedProcess]:
    """Run the fixture under -g and gdb-multiarch's batch `commands` against it: gdb's output
    lines and the guest's completed process."""
    program = fixture_path(arch, name, flavour)
    port = free_port()
    guest = start_guest(arch, program, *guest_args, where=str(port))
    try:
        gdb = subprocess.run(
            [
                str(GDB),
                "-nx",
                "-batch",
                *(("-ex", f"set sysroot /usr/{arch}-linux-gnu") if sysroot else ()),
                # gdb retries a refused connection while qemuser starts
                "-ex",
                f"target remote 127.0.0.1:{port}",
                *[arg for command in commands for arg in ("-ex", command)],
                *((str(program),) if give_file else ()),
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        stdout, stderr = guest.communicate(timeout=TIMEOUT)
    finally:
        if guest.poll() is None:
            guest.kill()
            guest.wait()
    done = subprocess.CompletedProcess(guest.args, guest.returncode, stdout, stderr)
    done.pid = guest.pid  # the guest's pid, which gdb names the inferior by
    return gdb.stdout.splitlines(), done


def _only_match(pattern: str, lines: list[str]) -> re.Match:
    found = [m for m in (re.fullmatch(pattern, line) for line in lines) if m]
    assert len(found) == 1, (pattern, lines)
    return found[0]


BUILDS = all_builds("gdb_target")  # static-pie too: gdb relocates it from the auxv


@needs_gdb
@pytest.mark.parametrize(("arch", "flavour"), BUILDS)
def test_break_inspect_step_and_run_to_exit(arch: str, flavour: str) -> None:
    lines, guest = debug(
        arch,
        flavour,
        ("one",),
        [
            "break main",
            "break add_twice",
            "continue",
            "p argc",
            "x/s argv[1]",
            "info sharedlibrary",
            "continue",
            "info registers pc",
            "p value",
            "set $before = $pc",
            "stepi",
            "p $pc != $before",
            "finish",
            "p counter",
            "next",
            "continue",
        ],
    )
    assert "Breakpoint 1, main (argc=2, argv=" in "\n".join(lines)
    assert "$1 = 2" in lines
    _only_match(r'0x[0-9a-f]+:\t"one"', lines)
    at_break = _only_match(r"Breakpoint 2 at (0x[0-9a-f]+): file gdb_target.c, line 15.", lines)
    assert "Breakpoint 2, add_twice (value=2) at gdb_target.c:15" in lines
    assert LINE_DOUBLED in lines
    # gdb's pc is the breakpoint's address: the engine stopped before that instruction
    pc = _only_match(r"pc\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+ <add_twice\+\d+>", lines)
    assert int(pc.group(1), 16) == int(at_break.group(1), 16)
    assert "$2 = 2" in lines  # value
    assert "$3 = 1" in lines  # stepi moved pc
    assert "Value returned is $4 = 4" in lines
    assert "$5 = 4" in lines  # counter, after add_twice
    assert '38\t    printf("result=%d counter=%d\\n", result, counter);' in lines
    assert lines[-1] == f"[Inferior 1 (process {guest.pid}) exited with code 04]"
    if flavour == "dynamic":  # gdb found the loader through the auxv, and libc through it
        assert any(re.search(r"Yes \(\*\)\s+/usr/\S+/lib/libc\.so\.6$", line) for line in lines)
    else:
        assert "No shared libraries loaded at this time." in lines
    assert guest.stdout == b"result=4 counter=4\n"
    assert guest.stderr == b""
    assert guest.returncode == 4


@needs_gdb
@pytest.mark.parametrize("arch", ARCHES)
def test_segv_stops_at_the_faulting_instruction(arch: str) -> None:
    lines, guest = debug(
        arch,
        "static",
        ("one", "crash"),
        ["continue", "info registers pc", "x/i $pc", "continue"],
    )
    at = lines.index("Program received signal SIGSEGV, Segmentation fault.")
    stop = re.fullmatch(
        r"(0x[0-9a-f]+) in main \(argc=3, argv=0x[0-9a-f]+\) at gdb_target.c:41", lines[at + 1]
    )
    assert stop, lines
    assert lines[at + 2] == LINE_BAD_STORE
    pc = _only_match(r"pc\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+ <main\+\d+>", lines)
    assert int(pc.group(1), 16) == int(stop.group(1), 16)
    # the instruction there is the store
    store = _only_match(r"=> 0x[0-9a-f]+ <main\+\d+>:\t(\w+)\t.*", lines)
    assert store.group(1) in ("str", "sw", "c.sw")
    assert lines[-2:] == [
        "Program terminated with signal SIGSEGV, Segmentation fault.",
        "The program no longer exists.",
    ]
    assert guest.returncode == -11
    assert guest.stderr.endswith(b"uncaught target signal 11 (Segmentation fault) - core dumped\n")


@needs_gdb
@pytest.mark.parametrize("arch", ARCHES)
def test_watchpoints_on_a_global(arch: str) -> None:
    commands = ["watch counter", "continue", "delete", "rwatch counter", "continue", "continue"]
    lines, guest = debug(arch, "static", ("one", "two"), commands)
    assert "Hardware watchpoint 1: counter" in lines
    at = lines.index("Old value = 0")
    assert lines[at + 1] == "New value = 6"
    # after the store, at the next line's start: GDB stepped over it with the watchpoint out
    assert lines[at + 2] == "add_twice (value=3) at gdb_target.c:17"
    # the read in main's printf: the guest's state stays whole (the load is not done twice)
    assert "Hardware read watchpoint 2: counter" in lines
    at = lines.index("Value = 6")
    assert re.fullmatch(
        r"0x[0-9a-f]+ in main \(argc=3, argv=0x[0-9a-f]+\) at gdb_target.c:38", lines[at + 1]
    )
    assert lines[-1] == f"[Inferior 1 (process {guest.pid}) exited with code 06]"
    assert guest.stdout == b"result=6 counter=6\n"
    assert guest.returncode == 6


@needs_gdb
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("passed", [True, False])
def test_signal_is_reported_then_passed_or_dropped(arch: str, passed: bool) -> None:
    # gdb passes SIGUSR1 on by default; "signal 0" resumes without it
    lines, guest = debug(
        arch, "static", ("usr1",), ["continue", "continue" if passed else "signal 0"]
    )
    at = lines.index("Program received signal SIGUSR1, User defined signal 1.")
    assert re.fullmatch(r"0x[0-9a-f]+ in \S+ \(.*", lines[at + 1]), lines
    if passed:  # the handler added SIGUSR1's number, 10, to the exit status (gdb says 012)
        assert lines[-1] == f"[Inferior 1 (process {guest.pid}) exited with code 012]"
        assert (guest.stdout, guest.returncode) == (b"handler ran\n", 10)
    else:
        assert lines[-1] == f"[Inferior 1 (process {guest.pid}) exited normally]"
        assert (guest.stdout, guest.returncode) == (b"", 0)


@needs_gdb
@pytest.mark.parametrize("arch", ARCHES)
def test_forked_child_runs_undebugged_and_the_parent_goes_on(arch: str) -> None:
    # proc_fork_exec forks, execs itself and threads; only the first process is debugged
    plain = run_guest(arch, fixture_path(arch, "proc_fork_exec", "static"))
    lines, guest = debug(
        arch, "static", (), ["break main", "continue", "continue"], "proc_fork_exec"
    )
    assert re.fullmatch(r"Breakpoint 1, 0x[0-9a-f]+ in main \(\)", lines[-2]), lines
    assert lines[-1] == f"[Inferior 1 (process {guest.pid}) exited with code 03]"
    assert (guest.stdout, guest.stderr, guest.returncode) == (plain.stdout, plain.stderr, 3)


@needs_gdb
@pytest.mark.parametrize("arch", ARCHES)
def test_program_and_libraries_are_read_through_the_stub(arch: str) -> None:
    # gdb is given no file: it learns the program's name (qXfer:exec-file), then reads it, the
    # loader and libc with vFile packets from its default sysroot "target:", which qemuser
    # opens where the guest finds them (-L, by default Debian's cross sysroot)
    commands = ["break add_twice", "continue", "info sharedlibrary", "info inferiors", "continue"]
    lines, guest = debug(arch, "dynamic", ("one",), commands, sysroot=False, give_file=False)
    program = fixture_path(arch, "gdb_target", "dynamic")
    assert "Breakpoint 1, add_twice (value=2) at gdb_target.c:15" in lines
    libraries = [
        line.split()[-1] for line in lines if re.match(r"0x[0-9a-f]+ +0x[0-9a-f]+ +Yes", line)
    ]
    assert len(libraries) == 2 and libraries[1] == "target:/lib/libc.so.6", lines
    assert re.fullmatch(r"target:/lib/ld-linux-(aarch64|riscv64-lp64d)\.so\.1", libraries[0])
    inferior = _only_match(r"\* 1 +process (\d+) +1 \(remote [^)]*\) +(\S+) *", lines)
    assert int(inferior.group(1)) == guest.pid and inferior.group(2) == f"target:{program}"
    assert lines[-1] == f"[Inferior 1 (process {guest.pid}) exited with code 04]"
    assert (guest.stdout, guest.returncode) == (b"result=4 counter=4\n", 4)


# ---- the protocol, spoken directly -------------------------------------------------------------


class RemoteClient:
    """The smallest GDB: sends packets, reads replies (acknowledging them)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.acks = True  # until QStartNoAckMode

    def send(self, payload: bytes) -> None:
        self.sock.sendall(b"$%s#%02x" % (payload, sum(payload) & 0xFF))

    def reply(self) -> bytes:
        while True:
            self.buffer = self.buffer.lstrip(b"+")
            start = self.buffer.find(b"$")
            end = self.buffer.find(b"#", start)
            if start >= 0 and end >= 0 and len(self.buffer) >= end + 3:
                payload = self.buffer[start + 1 : end]
                assert int(self.buffer[end + 1 : end + 3], 16) == sum(payload) & 0xFF
                self.buffer = self.buffer[end + 3 :]
                if self.acks:
                    try:
                        self.sock.sendall(b"+")
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the stub may be gone after its last reply (vKill's OK)
                # binary replies escape bytes as '}' then the byte xor 0x20
                return re.sub(rb"\}(.)", lambda m: bytes([m[1][0] ^ 0x20]), payload, flags=re.S)
            data = self.sock.recv(65536)
            assert data, "the stub closed the connection"
            self.buffer += data

    def ask(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.reply()


def connect_unix(path: Path, guest: subprocess.Popen) -> RemoteClient:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    while True:  # until qemuser listens
        try:
            sock.connect(str(path))
            return RemoteClient(sock)
        except (FileNotFoundError, ConnectionRefusedError):
            assert guest.poll() is None, guest.communicate()
            os.sched_yield()


def symbol_address(program: Path, name: str) -> int:
    with open(program, "rb") as f:
        symbol = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]
        return symbol["st_value"]


@pytest.mark.parametrize("arch", ARCHES)
def test_ctrl_c_interrupts_a_running_guest_on_a_unix_socket(arch: str, tmp_path: Path) -> None:
    program = fixture_path(arch, "gdb_target", "static")
    path = tmp_path / "gdb.sock"
    env = dict(os.environ, QEMU_GDB=str(path))  # the variable does what -g does
    guest = start_guest(arch, program, "spin", where=str(path), env=env)
    try:
        client = connect_unix(path, guest)
        assert b"qXfer:features:read+" in client.ask(b"qSupported:multiprocess+;swbreak+")
        # with multiprocess ids, the one thread is p<pid>.<pid>, the guest's own pid
        thread = b"p%x.%x" % (guest.pid, guest.pid)
        assert client.ask(b"?") == b"T05thread:%s;" % thread
        assert client.ask(b"qAttached") == b"1"
        assert client.ask(b"qC") == b"QC" + thread
        counter = symbol_address(program, "counter")
        assert client.ask(b"m%x,4" % counter) == b"00000000"
        # Ctrl-C may arrive before the guest is through libc's start (at EL0 its first
        # emulated MRS stops the engine, where the interrupt is seen): continue and interrupt
        # again, a bounded number of times, until the loop has run.
        spun = 0
        for attempt in range(20):
            client.send(b"vCont;c")
            time.sleep(0.01 * attempt)
            client.sock.sendall(b"\x03")
            assert client.reply() == b"T02thread:%s;" % thread
            raw = bytes.fromhex(client.ask(b"m%x,4" % counter).decode())
            spun = int.from_bytes(raw, "little")
            if spun:
                break
        assert spun > 0
        # the guest stays stopped while GDB looks
        assert client.ask(b"m%x,4" % counter) == b"%08x" % int.from_bytes(
            spun.to_bytes(4, "little"), "big"
        )
        # qemu-user ends at once, with status 0: k has no reply, vKill has OK (each packet
        # on one of the arches)
        if arch == "aarch64":
            client.send(b"k")
        else:
            assert client.ask(b"vKill;1") == b"OK"
        stdout, stderr = guest.communicate(timeout=TIMEOUT)
    finally:
        if guest.poll() is None:
            guest.kill()
            guest.wait()
    assert (stdout, stderr, guest.returncode) == (b"", b"", 0)


@pytest.mark.parametrize("arch", ARCHES)
def test_registers_memory_and_detach(arch: str, tmp_path: Path) -> None:
    program = fixture_path(arch, "gdb_target", "static")
    path = tmp_path / "gdb.sock"
    guest = start_guest(arch, program, "one", where=str(path))
    try:
        client = connect_unix(path, guest)
        assert client.ask(b"QStartNoAckMode") == b"OK"
        client.acks = False
        entry = symbol_address(program, "_start")
        pc_number = 32  # aarch64: x0-x30, sp, pc; riscv64: x0-x31, pc
        pc = int.from_bytes(bytes.fromhex(client.ask(b"p%x" % pc_number).decode()), "little")
        assert pc == entry  # a static program starts at its own entry
        assert [client.ask(p) for p in (b"Hg0", b"Hc-1", b"qfThreadInfo", b"qsThreadInfo")] == [
            b"OK",
            b"OK",
            b"m1",
            b"l",
        ]
        assert (client.ask(b"T1"), client.ask(b"T2")) == (b"OK", b"E02")
        # the auxv as the guest's stack holds it: AT_ENTRY (9) is the program's entry
        auxv = client.ask(b"qXfer:auxv:read::0,1000")
        assert auxv[:1] == b"l"
        words = [int.from_bytes(auxv[i : i + 8], "little") for i in range(1, len(auxv), 8)]
        pairs = list(zip(words[::2], words[1::2]))
        assert pairs[-1] == (0, 0) and [key for key, _ in pairs].count(0) == 1  # AT_NULL ends it
        assert dict(pairs)[9] == entry
        xml = client.ask(b"qXfer:features:read:target.xml:0,ffff")
        architecture = b"aarch64" if arch == "aarch64" else b"riscv:rv64"
        assert xml[:1] == b"l" and b"<architecture>%s</architecture>" % architecture in xml
        assert client.ask(b"qXfer:exec-file:read::0,ffff") == b"l" + os.fsencode(program)
        registers = client.ask(b"g")
        # aarch64: 33 x 8 + 4 + 32 x 16 + 4 + 4 bytes; riscv64: 33 x 8 + 32 x 8 + 3 x 4
        assert len(registers) == 2 * (788 if arch == "aarch64" else 532)
        assert (
            registers[pc_number * 16 : pc_number * 16 + 16]
            == entry.to_bytes(8, "little").hex().encode()
        )
        # memory: write the global through X (binary, with an escaped byte), read it back
        counter = symbol_address(program, "counter")
        assert client.ask(b"X%x,4:}]\x01\x02\x03" % counter) == b"OK"
        assert client.ask(b"m%x,4" % counter) == b"7d010203"
        assert client.ask(b"M%x,4:00000000" % counter) == b"OK"
        assert client.ask(b"m0,4") == b"E0e"  # nothing is mapped at 0
        # a breakpoint at main, then detach: the guest runs on without it
        assert client.ask(b"Z0,%x,4" % symbol_address(program, "main")) == b"OK"
        assert client.ask(b"D") == b"OK"
        stdout, stderr = guest.communicate(timeout=TIMEOUT)
    finally:
        if guest.poll() is None:
            guest.kill()
            guest.wait()
    assert (stdout, stderr, guest.returncode) == (b"result=4 counter=4\n", b"", 4)


def test_port_in_use_is_one_line_and_status_1() -> None:
    program = fixture_path("aarch64", "hello", "static")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [qemuser("aarch64"), "-g", str(port), str(program)],
            capture_output=True,
            timeout=TIMEOUT,
        )
    assert result.stderr == (
        f"qemuser-aarch64: could not open gdbserver on {port}: Address already in use\n".encode()
    )
    assert (result.stdout, result.returncode) == (b"", 1)


def test_bad_socket_path_is_one_line_and_status_1(tmp_path: Path) -> None:
    program = fixture_path("riscv64", "hello", "static")
    where = tmp_path / "missing" / "gdb.sock"
    result = subprocess.run(
        [qemuser("riscv64"), "-g", str(where), str(program)], capture_output=True, timeout=TIMEOUT
    )
    assert (
        result.stderr
        == (
            f"qemuser-riscv64: could not open gdbserver on {where}: No such file or directory\n"
        ).encode()
    )
    assert (result.stdout, result.returncode) == (b"", 1)


def test_empty_gdb_option_is_a_usage_error() -> None:
    program = fixture_path("aarch64", "hello", "static")
    result = subprocess.run(
        [qemuser("aarch64"), "-g", "", str(program)], capture_output=True, timeout=TIMEOUT
    )
    assert result.stderr == b"qemuser-aarch64: -g needs a port number or a socket path\n"
    assert (result.stdout, result.returncode) == (b"", 1)
