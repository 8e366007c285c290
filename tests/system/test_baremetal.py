"""Our own bare-metal guests on both virt boards: exact console output and exit status."""

from __future__ import annotations

import pytest

from tests.system.conftest import fixture, run_system


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_hello_prints_and_powers_off(arch: str) -> None:
    elf = fixture(f"hello-{arch}.elf")
    result = run_system(arch, "-M", "virt", "-nographic", "-bios", "none", "-kernel", str(elf))
    assert result.stdout == f"hello from {arch} virt\n"
    assert result.stderr == ""
    assert result.returncode == 0


def test_riscv_test_device_failure_code_is_exit_status() -> None:
    elf = fixture("exit3-riscv64.elf")
    result = run_system("riscv64", "-machine", "virt", "-bios", "none", "-kernel", str(elf))
    assert result.stdout == "hello from riscv64 virt\n"
    assert result.returncode == 3


def test_serial_file_and_null(tmp_path) -> None:
    elf = fixture("hello-aarch64.elf")
    log = tmp_path / "console.txt"
    result = run_system(
        "aarch64", "-M", "virt", "-display", "none", "-serial", f"file:{log}", "-kernel", str(elf)
    )
    assert (result.returncode, result.stdout) == (0, "")
    assert log.read_text() == "hello from aarch64 virt\n"
    result = run_system("aarch64", "-M", "virt", "-serial", "null", "-kernel", str(elf))
    assert (result.returncode, result.stdout) == (0, "")


def test_aarch64_traps_and_timer_irq_through_own_vector_table() -> None:
    elf = fixture("traps-aarch64.elf")
    result = run_system("aarch64", "-M", "virt", "-nographic", "-kernel", str(elf))
    assert result.stdout.splitlines() == [
        "traps: start",
        "trap EC=0x0015 ISS=0x0042",
        "back from svc",
        "trap EC=0x0000 ISS=0x0000",
        "back from undefined instruction",
        "irq id=0x001b",
        "back from timer interrupt",
    ]
    assert result.returncode == 0


def test_riscv64_traps_and_timer_interrupt() -> None:
    elf = fixture("traps-riscv64.elf")
    result = run_system("riscv64", "-M", "virt", "-nographic", "-bios", "none", "-kernel", str(elf))
    assert result.stdout.splitlines() == [
        "traps: start",
        "trap mcause=0x000000000000000b",
        "back from ecall",
        "trap mcause=0x0000000000000002",
        "back from illegal instruction",
        "trap mcause=0x8000000000000007",
        "back from timer interrupt",
    ]
    assert result.returncode == 0
