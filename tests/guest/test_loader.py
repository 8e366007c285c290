"""The ELF loader and the initial stack (tests/fixtures/elf_auxv.c, elf_layout.c).

elf_layout's report must be what the same source prints built for the host, run with address
randomisation off (setarch -R: brk then starts right after the program, as qemuser places it;
qemu-user keeps a shrunk heap's pages, Linux unmaps them). elf_auxv's initial stack holds the
architecture's own auxv entries and platform, so its expected text is written here, checked
against Linux (the same source built for the host) and the reference qemu-user; where those two
differ, Linux is the reference (noted at the line).
"""

import shutil
import struct
from pathlib import Path

import pytest

from tests.conftest import all_builds, fixture_path, run_guest, run_like_native

GUEST_ENV = {"QT_FIRST": "1", "QT_SECOND": "two words"}


def expected_auxv_output(arch: str, flavour: str, argv0: str, execfn: str) -> str:
    interpreter = flavour == "dynamic"
    lines = [
        "argc=3 argc-below-argv=yes sp-aligned=yes",
        f"argv[0]={argv0}",
        "argv[1]=x",
        "argv[2]=y z",
        "argv[argc]=NULL envp-after-argv=yes environ=yes",
        # the environment in the order it was given (qemu-user reverses it; Linux does not)
        "env QT_FIRST=1",
        "env QT_SECOND=two words",
        "strings-packed=yes execfn-above-strings=yes",
        f"AT_EXECFN={execfn}",
        "auxv-after-envp=yes terminated=yes agrees-with-getauxval=yes",
        "present: 3=yes 4=yes 5=yes 6=yes 7=yes 8=yes 9=yes 11=yes 12=yes 13=yes 14=yes "
        "23=yes 25=yes 16=yes " + ("26=yes" if arch == "aarch64" else "26=NO") + " 17=yes 31=yes",
        # Linux has AT_HWCAP2 (26) on arm64 only (riscv defines no ELF_HWCAP2)
        "AT_PHDR-is-phdr=yes dl-agrees=yes AT_PHENT=56(yes) AT_PHNUM-matches=yes",
        "AT_ENTRY-is-_start=yes",
        "bias-consistent=yes",
    ]
    if interpreter:
        lines += [
            "AT_BASE=interpreter's base: yes, apart from the program: yes",
            "interpreter ELF header at AT_BASE: yes",
        ]
    else:
        lines.append("AT_BASE=0")
    lines += [
        "AT_PAGESZ=4096 sysconf=4096 AT_CLKTCK=100 AT_FLAGS=0 AT_SECURE=0",
        "ids-match=yes",
        "AT_RANDOM-on-stack=yes below-strings=yes nonzero=yes",
        "AT_PLATFORM=aarch64 between-random-and-strings=yes"
        if arch == "aarch64"
        else "AT_PLATFORM=(none)",
        "AT_HWCAP-nonzero=yes",
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("arch", "flavour"), all_builds("elf_auxv"))
def test_initial_stack_and_auxv_as_linux_builds_them(arch: str, flavour: str) -> None:
    program = str(fixture_path(arch, "elf_auxv", flavour))
    result = run_guest(arch, program, "x", "y z", env=GUEST_ENV)
    assert result.stdout.decode() == expected_auxv_output(arch, flavour, program, program)
    assert result.stderr == b""
    assert result.returncode == 0


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_argv0_option_changes_argv_but_not_execfn(arch: str) -> None:
    program = str(fixture_path(arch, "elf_auxv", "dynamic"))
    result = run_guest(arch, program, "x", "y z", options=("-0", "renamed"), env=GUEST_ENV)
    assert result.stdout.decode() == expected_auxv_output(arch, "dynamic", "renamed", program)
    assert result.returncode == 0


# Linux (6.18 measured) loads a program that has no interpreter (static-pie) in the mmap area and
# starts its brk at ELF_ET_DYN_BASE, far below it, with or without randomisation; qemuser, like
# qemu-user, starts the brk right after the program's last segment.
STATIC_PIE_BRK = ((b"brk above end: NO, near end: NO\n", b"brk above end: yes, near end: yes\n"),)


@pytest.mark.parametrize(("arch", "flavour"), all_builds("elf_layout"))
def test_segments_bss_brk_and_stack_protections(arch: str, flavour: str) -> None:
    result = run_like_native(
        arch,
        "elf_layout",
        flavour,
        status=0,
        differences=STATIC_PIE_BRK if flavour == "static-pie" else (),
    )
    assert result.stderr == b""


SEGFAULT_MESSAGE = b"qemuser: uncaught target signal 11 (Segmentation fault) - core dumped\n"


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
@pytest.mark.parametrize("where", ["exec-stack", "exec-data"])
def test_stack_and_data_are_not_executable(arch: str, where: str) -> None:
    result = run_guest(arch, fixture_path(arch, "elf_layout", "static"), where)
    assert result.stdout == b""
    assert result.stderr == SEGFAULT_MESSAGE
    assert result.returncode == -11


def with_executable_stack(source: Path, target: Path) -> Path:
    """A copy of an ELF64 whose PT_GNU_STACK asks for an executable stack (as -z execstack)."""
    shutil.copyfile(source, target)
    shutil.copymode(source, target)  # execve refuses a file without execute permission
    data = bytearray(target.read_bytes())
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        entry = phoff + i * phentsize
        p_type, p_flags = struct.unpack_from("<II", data, entry)
        if p_type == 0x6474E551:  # PT_GNU_STACK
            struct.pack_into("<I", data, entry + 4, p_flags | 1)  # PF_X
            target.write_bytes(bytes(data))
            return target
    raise AssertionError("no PT_GNU_STACK")


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_pt_gnu_stack_executable_makes_the_stack_executable(arch: str, tmp_path: Path) -> None:
    program = with_executable_stack(
        fixture_path(arch, "elf_layout", "static"), tmp_path / "execstack"
    )
    result = run_guest(arch, program, "exec-stack")
    assert result.stdout == b"stack code returned 7\n"
    assert result.returncode == 0


# ---- programs that cannot be loaded: one line, status 1 ------------------------------------


def load_error(arch: str, program: str | Path) -> tuple[int, str]:
    result = run_guest(arch, program)
    assert result.stdout == b""
    return result.returncode, result.stderr.decode()


@pytest.mark.parametrize(("arch", "other"), [("aarch64", "riscv64"), ("riscv64", "aarch64")])
def test_other_architecture_names_the_qemuser_to_use(arch: str, other: str) -> None:
    program = fixture_path(other, "hello", "static")
    names = {"aarch64": "AArch64", "riscv64": "RISC-V"}
    assert load_error(arch, program) == (
        1,
        f"qemuser-{arch}: '{program}' is built for {names[other]}, not {arch}; "
        f"run it with qemuser-{other}\n",
    )


def test_host_binary_is_refused() -> None:
    host = shutil.which("true")
    assert host is not None
    assert load_error("aarch64", host) == (
        1,
        f"qemuser-aarch64: '{host}' is built for x86-64, not aarch64\n",
    )


def test_empty_file_directory_and_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    script = tmp_path / "script"
    script.write_bytes(b"#!/bin/sh\necho hi\n")
    empty.chmod(0o755)  # execute permission: else Linux's EACCES comes first
    script.chmod(0o755)
    missing = tmp_path / "missing"
    assert load_error("aarch64", empty) == (
        1,
        f"qemuser-aarch64: '{empty}' is not an ELF executable\n",
    )
    assert load_error("riscv64", script) == (
        1,
        f"qemuser-riscv64: '{script}' is not an ELF executable\n",
    )
    assert load_error("aarch64", tmp_path) == (
        1,
        f"qemuser-aarch64: Could not open '{tmp_path}': Is a directory\n",
    )
    assert load_error("riscv64", missing) == (
        1,
        f"qemuser-riscv64: Could not open '{missing}': No such file or directory\n",
    )


@pytest.mark.parametrize(
    ("length", "message"),
    [
        (10, "is a truncated ELF file"),  # not even e_ident
        (40, "is a truncated or corrupt ELF file"),  # a partial ELF header
        (100, "is a truncated ELF file"),  # program headers cut
        (3000, "is a truncated ELF file (a segment lies past its end)"),
    ],
)
def test_truncated_elf(tmp_path: Path, length: int, message: str) -> None:
    whole = fixture_path("aarch64", "hello", "static").read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(whole[:length])
    cut.chmod(0o755)  # execute permission: else Linux's EACCES comes first
    assert load_error("aarch64", cut) == (1, f"qemuser-aarch64: '{cut}' {message}\n")
