"""riscv64 CPU properties in QEMU's syntax (`-cpu rv64,c=off,zba=off`): QEMU's errors in its
own words (Debian's qemu-riscv64 7.2 prints the same after its "qemu-riscv64: "), values the
core cannot honour refused, c=off enforced, and `-cpu help` listing them."""

from __future__ import annotations

import signal
import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import fixture_path, qemuser, run_guest
from tests.tiny_elf import program


def cpu_run(value: str, program_path: str | Path) -> subprocess.CompletedProcess:
    return run_guest("riscv64", program_path, options=("-cpu", value), timeout=60)


RV64 = "can't apply global rv64-riscv-cpu."
NO_CORE = "unicorn's core cannot turn"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("rv64,foo=on", f"{RV64}foo=on: Property 'rv64-riscv-cpu.foo' not found"),
        ("rv64,c=maybe", f"{RV64}c=maybe: Parameter 'c' expects 'on' or 'off'"),
        ("rv64,zba=ON", f"{RV64}zba=ON: Parameter 'zba' expects 'on' or 'off'"),
        ("rv64,C=on", f"{RV64}C=on: Property 'rv64-riscv-cpu.C' not found"),
        ("rv64,c", "Expected key=value format, found c."),
        (
            "sifive-u54,zba=on",
            "can't apply global sifive-u54-riscv-cpu.zba=on: "
            "Property 'sifive-u54-riscv-cpu.zba' not found",
        ),
        # valid for QEMU, but unicorn's core has no Zba / Zbb / V, and always has M
        ("rv64,zba=on", f"{RV64}zba=on: {NO_CORE} zba (address generation (sh1add...)) on"),
        (
            "rv64,c=on,zbb=true",
            f"{RV64}zbb=true: {NO_CORE} zbb (basic bit manipulation (andn, clz...)) on",
        ),
        ("rv64,v=on", f"{RV64}v=on: {NO_CORE} v (vector extension) on"),
        ("rv64,m=off", f"{RV64}m=off: {NO_CORE} m (integer multiply and divide) off"),
    ],
)
def test_refused_properties_are_one_line_errors(value: str, error: str) -> None:
    result = cpu_run(value, fixture_path("riscv64", "hello"))
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode() == f"qemuser-riscv64: {error}\n"


@pytest.mark.parametrize("value", ["rv64,c=on,zba=off,zbb=no", "rv64,", "rv64,g=on,Zicsr=yes"])
def test_properties_the_core_has_run_the_guest(value: str) -> None:
    result = cpu_run(value, fixture_path("riscv64", "hello"))
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout.startswith(b"Hello, world!\n")


def _program_with_compressed(tmp_path: Path, before: tuple[int, ...]) -> Path:
    """A static program: 4-byte instructions `before`, then c.addi a0, 1 and c.nop, then
    exit_group(a0). Built with C, it exits with a0 + 1."""
    code = struct.pack(f"<{len(before)}I", *before) + struct.pack("<HH", 0x0505, 0x0001)
    code += struct.pack("<II", 94 << 20 | 17 << 7 | 0x13, 0x73)  # addi a7, zero, 94; ecall
    elf = program("riscv64", text_size=128 + len(code))
    path = tmp_path / "compressed"
    path.write_bytes(elf[:128] + code)
    path.chmod(0o755)
    return path


ADDI_A0_7 = 7 << 20 | 10 << 7 | 0x13


def test_c_off_makes_a_compressed_instruction_illegal(tmp_path: Path) -> None:
    path = _program_with_compressed(tmp_path, (ADDI_A0_7,))
    assert cpu_run("rv64", path).returncode == 8  # c.addi ran: the core has C
    result = cpu_run("rv64,c=off", path)
    assert result.returncode == -signal.SIGILL
    assert (
        result.stderr == b"qemuser: uncaught target signal 4 (Illegal instruction) - core dumped\n"
    )
    assert cpu_run("rv64,c=false,c=true", path).returncode == 8  # the last one counts


def test_c_off_with_strace_shows_sigill_at_the_instruction(tmp_path: Path) -> None:
    path = _program_with_compressed(tmp_path, (ADDI_A0_7,))
    result = run_guest("riscv64", path, options=("-cpu", "rv64,c=off", "-strace"))
    text = result.stderr.decode()
    # the compressed instruction is the second one of the program (0x400080 + 4)
    assert "si_addr=0x400084" in text, text
    assert result.returncode == -signal.SIGILL


def test_c_off_jump_to_a_halfword_pc_is_sigbus(tmp_path: Path) -> None:
    # jal zero, +6: to the second halfword of the next word, which only a hart with C reaches
    jal_6 = 0x0060006F
    path = _program_with_compressed(tmp_path, (ADDI_A0_7, jal_6, 0x0001_0001))
    result = cpu_run("rv64,c=off", path)
    assert result.returncode == -signal.SIGBUS
    assert result.stderr == b"qemuser: uncaught target signal 7 (Bus error) - core dumped\n"


def test_cpu_help_lists_the_properties() -> None:
    result = subprocess.run(
        [qemuser("riscv64"), "-cpu", "help"], capture_output=True, timeout=60, check=True
    )
    lines = result.stdout.decode().splitlines()
    assert "Properties of rv64 (-cpu rv64,NAME=on|off); those marked 'always' are fixed by" in lines
    assert "  c          on|off, default on  compressed instructions" in lines
    assert "  zba        always off          address generation (sh1add...)" in lines
    assert "  m          always on           integer multiply and divide" in lines


def test_aarch64_properties_are_refused_not_ignored() -> None:
    result = run_guest("aarch64", fixture_path("aarch64", "hello"), options=("-cpu", "max,sve=off"))
    assert result.returncode == 1
    assert result.stderr == (
        b"qemuser-aarch64: can't apply global max-arm-cpu.sve=off: "
        b"qemuser implements no properties of max\n"
    )
