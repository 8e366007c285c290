"""riscv64 virt interrupts and firmware seen from guests: the default firmware's built-in SBI
from an S-mode guest (timer, the UART's receive interrupt through the PLIC's S context), and the
same UART interrupt through the PLIC's M context with -bios none."""

from __future__ import annotations

import pytest

from tests.system.conftest import fixture, run_system
from tests.system.interactive import ConsoleSession


@pytest.mark.parametrize("firmware", [[], ["-bios", "default"]])
def test_s_mode_guest_uses_sbi_timer_plic_uart_interrupt_and_srst(firmware: list[str]) -> None:
    elf = fixture("sbi-riscv64.elf")
    session = ConsoleSession("riscv64", "-M", "virt", "-nographic", *firmware, "-kernel", str(elf))
    try:
        session.expect("type a key: ")
        session.type("x")
        status = session.wait()
    finally:
        session.close()
    assert session.lines() == [
        "sbi: S mode",
        "spec version 0x0000000001000000",
        "probe TIME SRST DBCN unknown: 1110",
        "unknown extension error 0xfffffffffffffffe",  # SBI_ERR_NOT_SUPPORTED
        "rdtime advances",
        "timer interrupt, scause 0x8000000000000005",
        "type a key: external interrupt, scause 0x8000000000000009, got 'x'",
        "",
    ]
    assert session.stderr() == ""
    assert status == 0


def test_bios_none_still_enters_the_kernel_in_machine_mode() -> None:
    # The same S-mode guest without firmware: its first ecall has no mtvec to go to.
    elf = fixture("sbi-riscv64.elf")
    result = run_system("riscv64", "-M", "virt", "-bios", "none", "-kernel", str(elf))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("qemuser-system-riscv64: guest trap (cause 0xb) with no mtvec")


def test_machine_mode_uart_interrupt_through_plic_m_context() -> None:
    elf = fixture("plic-riscv64.elf")
    session = ConsoleSession(
        "riscv64", "-M", "virt", "-nographic", "-bios", "none", "-kernel", str(elf)
    )
    try:
        session.expect("type: ")
        session.type("abc")
        status = session.wait()
    finally:
        session.close()
    assert session.lines() == ["type: mcause M external, claimed uart, got 'abc'", ""]
    assert status == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-bios", "/nonexistent/fw.bin"], "could not load firmware '/nonexistent/fw.bin'"),
        ([], "no kernel given for the default firmware (use -kernel)"),
    ],
)
def test_firmware_errors_are_one_line(args: list[str], message: str) -> None:
    result = run_system("riscv64", "-M", "virt", *args)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"qemuser-system-riscv64: {message}")
