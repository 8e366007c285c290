"""The riscv64 virt board's default firmware (no -bios): the built-in SBI seen from an S-mode
guest, with a timer interrupt and the UART's receive interrupt routed through the PLIC."""

from __future__ import annotations

from tests.system.conftest import fixture, run_system
from tests.system.interactive import ConsoleSession


def test_s_mode_guest_uses_sbi_timer_plic_uart_interrupt_and_srst() -> None:
    elf = fixture("sbi-riscv64.elf")
    session = ConsoleSession("riscv64", "-M", "virt", "-nographic", "-kernel", str(elf))
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
