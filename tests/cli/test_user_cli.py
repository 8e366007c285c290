"""qemuser-<arch>'s command line, end to end: options and their environment variables as the guest
sees them (tests/fixtures/cli_probe.c), -strace and -d logs, exit statuses and fatal signals.

Expected outputs were checked against Debian's qemu-aarch64 / qemu-riscv64 and the same source
built natively (differences are deliberate and said where they are).
"""

from __future__ import annotations

import os
import re

import pytest
from elftools.elf.elffile import ELFFile

from tests.conftest import ARCHES, fixture_path, qemuser, run_guest

BOTH_LINKS = [(arch, flavour) for arch in ARCHES for flavour in ("static", "dynamic")]


def probe(arch: str, flavour: str = "static") -> str:
    return str(fixture_path(arch, "cli_probe", flavour))


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without QEMU_* or CLI_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QEMU_", "CLI_"))}
    env.update(extra)
    return env


def without_pid(text: bytes) -> list[str]:
    """-strace lines with their leading pid taken off (the pid is this run's)."""
    return [re.sub(r"^\d+ ", "", line) for line in text.decode().splitlines()]


# ---- argv and environment --------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "flavour"), BOTH_LINKS)
def test_argv0_set_and_unset_env_options(arch: str, flavour: str) -> None:
    result = run_guest(
        arch,
        probe(arch, flavour),
        "args",
        "x y",
        options=("-0", "myname", "-E", "CLI_C=3,CLI_A=9", "-U", "CLI_B", "-E", "CLI_D=a=b"),
        env=clean_env(CLI_A="1", CLI_B="2"),
    )
    assert result.stderr == b""
    assert result.stdout == (
        b"argc=3\nargv[0]=myname\nargv[1]=args\nargv[2]=x y\n"
        b"env CLI_A=9\nenv CLI_C=3\nenv CLI_D=a=b\nQEMU_CPU=(unset)\n"
    )
    assert result.returncode == 0


@pytest.mark.parametrize("arch", ARCHES)
def test_environment_variables_do_what_the_options_do(arch: str) -> None:
    env = clean_env(
        CLI_A="1",
        CLI_B="2",
        QEMU_SET_ENV="CLI_D=4,CLI_E=5",
        QEMU_UNSET_ENV="CLI_A",
        QEMU_ARGV0="zz",
        QEMU_CPU=("cortex-a72" if arch == "aarch64" else "rv64"),
    )
    result = run_guest(arch, probe(arch), "args", env=env)
    # qemu-user leaves its own variables in the guest's environment, and so do we
    cpu = env["QEMU_CPU"].encode()
    assert result.stdout == (
        b"argc=2\nargv[0]=zz\nargv[1]=args\nenv CLI_B=2\nenv CLI_D=4\nenv CLI_E=5\n"
        b"QEMU_CPU=" + cpu + b"\n"
    )
    assert result.returncode == 0


def test_command_line_wins_over_environment() -> None:
    env = clean_env(QEMU_ARGV0="from-env", QEMU_SET_ENV="CLI_X=env")
    result = run_guest(
        "aarch64",
        probe("aarch64"),
        "args",
        options=("-0", "from-flag", "-E", "CLI_X=flag"),
        env=env,
    )
    assert result.stdout.splitlines()[:2] == [b"argc=2", b"argv[0]=from-flag"]
    assert b"env CLI_X=flag\n" in result.stdout


# ---- -cpu, -s, -L ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "env", "expected"),
    [
        ((), {}, b"atomics=1\n"),  # "max" has LSE atomics
        (("-cpu", "cortex-a53"), {}, b"atomics=0\n"),  # ARMv8.0 has not
        ((), {"QEMU_CPU": "cortex-a53"}, b"atomics=0\n"),
    ],
)
def test_cpu_model_changes_the_hwcaps_aarch64(options, env, expected) -> None:
    result = run_guest("aarch64", probe("aarch64"), "hwcap", options=options, env=clean_env(**env))
    assert (result.stdout, result.returncode) == (expected, 0)


def test_cpu_model_riscv64_runs() -> None:
    result = run_guest("riscv64", probe("riscv64"), "hwcap", options=("-cpu", "sifive-u54"))
    assert (result.stdout, result.returncode) == (b"atomics=1\n", 0)


@pytest.mark.parametrize(
    ("arch", "options", "env", "expected"),
    [
        ("aarch64", (), {}, b"stack=8192K\n"),
        ("aarch64", ("-s", "1M"), {}, b"stack=1024K\n"),
        ("aarch64", (), {"QEMU_STACK_SIZE": "2M"}, b"stack=2048K\n"),
        ("aarch64", ("-s", "1"), {}, b"stack=128K\n"),  # qemu's 32-page minimum
        ("riscv64", ("-s", "0x300000"), {}, b"stack=3072K\n"),
        ("riscv64", ("-s", "512k"), {}, b"stack=512K\n"),
    ],
)
def test_stack_size(arch, options, env, expected) -> None:
    result = run_guest(arch, probe(arch), "stack", options=options, env=clean_env(**env))
    assert (result.stdout, result.returncode) == (expected, 0)


@pytest.mark.parametrize("arch", ARCHES)
def test_sysroot_option_and_variable(arch: str, tmp_path) -> None:
    root = tmp_path / "root"
    root.symlink_to(f"/usr/{arch}-linux-gnu")
    ok = run_guest(arch, probe(arch, "dynamic"), "exit", "5", options=("-L", str(root)))
    assert (ok.stdout, ok.stderr, ok.returncode) == (b"", b"", 5)
    # a sysroot without the interpreter: the dynamic program cannot start
    for options, env in (
        (("-L", str(tmp_path)), {}),
        ((), {"QEMU_LD_PREFIX": str(tmp_path)}),
    ):
        bad = run_guest(
            arch, probe(arch, "dynamic"), "exit", "5", options=options, env=clean_env(**env)
        )
        assert bad.returncode == 1
        assert bad.stderr.startswith(f"qemuser-{arch}: cannot load interpreter /lib/".encode())
        assert bad.stderr.count(b"\n") == 1


# ---- exit status and fatal signals ------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize(("code", "status"), [(0, 0), (1, 1), (42, 42), (255, 255), (256, 0)])
def test_exit_status_passes_through(arch: str, code: int, status: int) -> None:
    result = run_guest(arch, probe(arch), "exit", str(code))
    assert (result.stdout, result.stderr, result.returncode) == (b"", b"", status)


@pytest.mark.parametrize(("arch", "flavour"), BOTH_LINKS)
def test_abort_dies_of_sigabrt_with_core_message(arch: str, flavour: str) -> None:
    result = run_guest(arch, probe(arch, flavour), "abort")
    assert result.stdout == b"aborting\n"
    assert result.stderr == b"qemuser: uncaught target signal 6 (Aborted) - core dumped\n"
    assert result.returncode == -6


@pytest.mark.parametrize(
    ("arch", "signo", "message"),
    [
        ("aarch64", 15, "15 (Terminated)"),  # no core dump: Linux would not write one
        ("riscv64", 15, "15 (Terminated)"),
        ("aarch64", 3, "3 (Quit) - core dumped"),
        ("riscv64", 10, "10 (User defined signal 1)"),
    ],
)
def test_raise_dies_of_that_signal(arch: str, signo: int, message: str) -> None:
    result = run_guest(arch, probe(arch), "raise", str(signo))
    assert result.stdout == f"raising {signo}\n".encode()
    assert result.stderr == f"qemuser: uncaught target signal {message}\n".encode()
    assert result.returncode == -signo


@pytest.mark.parametrize("arch", ARCHES)
def test_null_store_dies_of_sigsegv(arch: str) -> None:
    result = run_guest(arch, probe(arch, "dynamic"), "segv")
    assert result.stdout == b"storing\n"
    assert (
        result.stderr == b"qemuser: uncaught target signal 11 (Segmentation fault) - core dumped\n"
    )
    assert result.returncode == -11


# ---- -strace -----------------------------------------------------------------------------------

STRACE_TAIL = [
    'write(1,"hi\\n",3) = 3',
    'openat(AT_FDCWD,"/nonexistent/cli-probe",O_RDONLY|O_CLOEXEC,0)'
    " = -1 errno=2 (ENOENT: No such file or directory)",
    "close(1234) = -1 errno=9 (EBADF: Bad file descriptor)",
    'write(1,"openat=-1 errno=2 close=-1 errno=9\\n",35) = 35',
    "exit_group(7)",
]
STDOUT_FSTAT = 'newfstatat(1,"",{st_mode=S_IFIFO|0600,st_size=0,...},AT_EMPTY_PATH) = 0'
SYSCALLS_STDOUT = b"syscalls:\nhi\nopenat=-1 errno=2 close=-1 errno=9\n"


def strace_tail(lines: list[str]) -> list[str]:
    starts = [i for i, line in enumerate(lines) if line.startswith('write(1,"hi\\n"')]
    assert len(starts) == 1, lines
    return lines[starts[0] :]


@pytest.mark.parametrize(("arch", "flavour"), BOTH_LINKS)
def test_strace_lines_are_decoded(arch: str, flavour: str) -> None:
    result = run_guest(arch, probe(arch, flavour), "syscalls", options=("-strace",))
    assert result.stdout == SYSCALLS_STDOUT
    assert result.returncode == 7
    lines = without_pid(result.stderr)
    assert strace_tail(lines) == STRACE_TAIL
    assert STDOUT_FSTAT in lines  # a struct's fields, stdout being a pipe here
    # every line is one call of this process: "<pid> name(...)"
    pids = {line.split(" ", 1)[0] for line in result.stderr.decode().splitlines()}
    assert len(pids) == 1 and pids.pop().isdigit()
    if flavour == "dynamic":  # the loader's work shows decoded too
        assert any(
            re.fullmatch(r'openat\(AT_FDCWD,"[^"]*libc\.so\.6",O_RDONLY\|O_CLOEXEC,0\) = \d+', ln)
            for ln in lines
        ), lines


@pytest.mark.parametrize(
    ("options", "env"),
    [((), {"QEMU_STRACE": ""}), (("-d", "strace"), {}), ((), {"QEMU_LOG": "strace"})],
)
def test_strace_from_variable_and_log_item(options, env) -> None:
    result = run_guest(
        "riscv64", probe("riscv64"), "syscalls", options=options, env=clean_env(**env)
    )
    assert result.stdout == SYSCALLS_STDOUT
    assert strace_tail(without_pid(result.stderr)) == STRACE_TAIL


@pytest.mark.parametrize("use_variable", [False, True])
def test_strace_to_log_file(tmp_path, use_variable: bool) -> None:
    log = tmp_path / "trace.log"
    options = ("-strace",) if use_variable else ("-strace", "-D", str(log))
    env = clean_env(QEMU_LOG_FILENAME=str(log)) if use_variable else clean_env()
    result = run_guest("aarch64", probe("aarch64"), "syscalls", options=options, env=env)
    assert (result.stdout, result.stderr, result.returncode) == (SYSCALLS_STDOUT, b"", 7)
    assert strace_tail(without_pid(log.read_bytes())) == STRACE_TAIL


# ---- -d unimp, in_asm, page --------------------------------------------------------------------

UNKNOWN_STDOUT = b"syscall(4000)=-1 errno=38\n" * 2


@pytest.mark.parametrize("arch", ARCHES)
def test_unimplemented_syscall_reported_once_with_d_unimp(arch: str) -> None:
    quiet = run_guest(arch, probe(arch), "unknown")
    assert (quiet.stdout, quiet.stderr, quiet.returncode) == (UNKNOWN_STDOUT, b"", 0)
    loud = run_guest(arch, probe(arch), "unknown", options=("-d", "unimp"))
    assert loud.stdout == UNKNOWN_STDOUT
    assert loud.stderr == b"qemuser: unsupported syscall 4000 (unknown)\n"


def elf_entry(path: str) -> int:
    with open(path, "rb") as stream:
        return ELFFile(stream).header.e_entry


def entry_encoding(path: str, arch: str) -> str:
    """The first instruction of the program, as the log shows its encoding (hex of the word)."""
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        entry = elf.header.e_entry
        for segment in elf.iter_segments():
            vaddr = segment["p_vaddr"]
            if segment["p_type"] == "PT_LOAD" and vaddr <= entry < vaddr + segment["p_filesz"]:
                code = segment.data()[entry - vaddr : entry - vaddr + 4]
    compressed = arch == "riscv64" and code[0] & 3 != 3  # RVC: 16-bit instruction
    return (code[:2] if compressed else code)[::-1].hex()


@pytest.mark.parametrize("arch", ARCHES)
def test_in_asm_logs_each_block_once_from_the_entry(arch: str) -> None:
    program = probe(arch)
    result = run_guest(arch, program, "exit", "3", options=("-d", "in_asm"))
    assert (result.stdout, result.returncode) == (b"", 3)
    lines = result.stderr.decode().splitlines()
    digits = 8 if arch == "aarch64" else 16
    assert lines[0] == "----------------"
    assert lines[1] == "IN: _start"
    assert lines[2].startswith(f"0x{elf_entry(program):0{digits}x}:  ")
    assert lines[2].split()[1] == entry_encoding(program, arch)
    blocks = result.stderr.decode().split("----------------\n")[1:]
    assert len(blocks) > 100
    starts = [block.splitlines()[1].split(":")[0] for block in blocks]
    # every line of a block is "address:  encoding  instruction"
    insn = re.compile(rf"0x[0-9a-f]{{{digits}}}:  [0-9a-f]{{4,8}}  \S.*")
    assert all(insn.fullmatch(ln) for block in blocks for ln in block.splitlines()[1:] if ln)
    # a block is logged when first translated, not on every run: loops do not repeat it
    sizes = [(start, len(block)) for start, block in zip(starts, blocks)]
    assert len(sizes) == len(set(sizes))


@pytest.mark.parametrize(("arch", "to_file"), [("aarch64", False), ("riscv64", True)])
def test_page_layout_at_start(arch: str, to_file: bool, tmp_path) -> None:
    program = probe(arch)
    log = tmp_path / "page.log"
    options = ("-d", "page", "-s", "1M") + (("-D", str(log)) if to_file else ())
    result = run_guest(arch, program, "exit", "0", options=options)
    assert result.returncode == 0
    if to_file:
        assert result.stderr == b""
    lines = (log.read_bytes() if to_file else result.stderr).decode().splitlines()
    assert lines[:2] == [
        "page layout changed following binary load",
        "start            end              size             prot",
    ]
    rows = [
        ln for ln in lines[2:] if re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{16} [0-9a-f]{16} .{3}", ln)
    ]
    # the code segment is r-x, and the stack is 1 MiB of rw-
    assert any(row.endswith(" r-x") for row in rows)
    assert any(row.endswith(" 0000000000100000 rw-") for row in rows)
    facts = dict(ln.split() for ln in lines[2 + len(rows) :])
    assert list(facts) == [
        "start_brk",
        "end_code",
        "start_code",
        "start_data",
        "end_data",
        "start_stack",
        "brk",
        "entry",
        "argv_start",
        "env_start",
        "auxv_start",
    ]
    assert int(facts["entry"], 16) == elf_entry(program)
    assert int(facts["argv_start"], 16) == int(facts["start_stack"], 16) + 8


# ---- messages that end the run -------------------------------------------------------------


def run_cli(arch: str, *args: str, env: dict[str, str] | None = None):
    import subprocess

    return subprocess.run(
        [qemuser(arch), *args], capture_output=True, env=env or clean_env(), timeout=60
    )


def test_help_version_and_lists() -> None:
    help_text = run_cli("aarch64", "-h")
    assert help_text.returncode == 0
    assert help_text.stdout.startswith(b"usage: qemuser-aarch64 [options] program [arguments...]\n")
    for flag in (
        b"-L path",
        b"-E var=value",
        b"-U var",
        b"-0 argv0",
        b"-cpu model",
        b"-s size",
        b"-strace",
        b"-d item[,...]",
        b"-D logfile",
        b"QEMU_STACK_SIZE",
    ):
        assert flag in help_text.stdout
    version = run_cli("riscv64", "-version")
    assert version.returncode == 0
    assert version.stdout.startswith(b"qemuser-riscv64 version ")
    cpus = run_cli("riscv64", "-cpu", "help")
    assert cpus.stdout.splitlines()[:2] == [
        b"Available CPUs (riscv64):",
        b"  rv64           RV64GC (IMAFDC, Zicsr, Zifencei), S and U modes (default)",
    ]
    items = run_cli("aarch64", "-d", "help")
    assert [line.split()[0] for line in items.stdout.splitlines()[1:]] == [
        b"in_asm",
        b"strace",
        b"unimp",
        b"page",
    ]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    """Files that are not aarch64 programs, each of a different kind."""
    folder = tmp_path_factory.mktemp("bad")
    program = fixture_path("aarch64", "cli_probe", "static").read_bytes()
    files = {
        "text": b"#!/bin/sh\necho not an ELF\n",
        "truncated-header": program[:30],
        "truncated-segments": program[:4096],
    }
    paths = {"directory": str(folder)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o755)  # else execve's EACCES comes first, as on Linux
        paths[name] = str(folder / name)
    paths["missing"] = str(folder / "no-such-program")
    return paths


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("{missing}",), "qemuser-aarch64: Could not open '{missing}': No such file or directory"),
        (("{directory}",), "qemuser-aarch64: Could not open '{directory}': Is a directory"),
        (("{text}",), "qemuser-aarch64: '{text}' is not an ELF executable"),
        (
            ("{truncated-segments}",),
            "qemuser-aarch64: '{truncated-segments}' is a truncated ELF file"
            " (a segment lies past its end)",
        ),
        (("{truncated-header}",), "qemuser-aarch64: '{truncated-header}' is a truncated"),
        (
            ("{riscv}",),
            "qemuser-aarch64: '{riscv}' is built for RISC-V, not aarch64; "
            "run it with qemuser-riscv64",
        ),
        (("/bin/true",), "qemuser-aarch64: '/bin/true' is built for x86-64, not aarch64"),
        (("-bogus", "{probe}"), "qemuser-aarch64: unknown option '-bogus' (try -h)"),
        (("--bogus",), "qemuser-aarch64: unknown option '--bogus' (try -h)"),
        (("-L",), "qemuser-aarch64: option '-L' needs an argument (path)"),
        (("-s", "12X", "{probe}"), "qemuser-aarch64: invalid stack size '12X'"),
        (("-s", "0", "{probe}"), "qemuser-aarch64: invalid stack size '0'"),
        (("-s", "16E", "{probe}"), "qemuser-aarch64: invalid stack size '16E'"),
        (
            ("-cpu", "pentium", "{probe}"),
            "qemuser-aarch64: unable to find CPU model 'pentium' (try -cpu help)",
        ),
        (
            ("-d", "in_asm,bogus", "{probe}"),
            "qemuser-aarch64: unknown log item 'bogus' (try -d help)",
        ),
        (
            ("-E", "NOVALUE", "{probe}"),
            "qemuser-aarch64: 'NOVALUE' is not var=value",
        ),
        (
            ("-U", "A=1", "{probe}"),
            "qemuser-aarch64: 'A=1' is not a variable name",
        ),
        (
            ("-D", "/nonexistent/dir/log", "{probe}"),
            "qemuser-aarch64: cannot open log file '/nonexistent/dir/log': "
            "No such file or directory",
        ),
        ((), "qemuser-aarch64: no program given (try -h)"),
    ],
)
def test_errors_are_one_line_and_status_1(bad_files, args, message) -> None:
    names = dict(bad_files, probe=probe("aarch64"), riscv=probe("riscv64"))
    result = run_cli("aarch64", *(arg.format(**names) for arg in args))
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.startswith(message.format(**names).encode())
    assert result.stderr.count(b"\n") == 1, result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QEMU_STACK_SIZE": "lots"}, "invalid stack size 'lots' (from QEMU_STACK_SIZE)"),
        ({"QEMU_CPU": "z80"}, "unable to find CPU model 'z80' (try -cpu help) (from QEMU_CPU)"),
        ({"QEMU_LOG": "nothing"}, "unknown log item 'nothing' (try -d help) (from QEMU_LOG)"),
        ({"QEMU_SET_ENV": "A=1,B"}, "'B' is not var=value (from QEMU_SET_ENV)"),
    ],
)
def test_bad_environment_variables_are_one_line_errors(env, message) -> None:
    result = run_cli("riscv64", probe("riscv64"), env=clean_env(**env))
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == f"qemuser-riscv64: {message}\n".encode()


@pytest.mark.parametrize("arch", ARCHES)
def test_raise_sigkill_dies_of_sigkill(arch: str) -> None:
    result = run_guest(arch, probe(arch), "raise", "9")
    assert result.stdout == b"raising 9\n"
    assert b"Traceback" not in result.stderr
    assert result.returncode == -9
