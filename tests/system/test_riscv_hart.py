"""The riscv64 hart's trap entry (arch/riscv64.py) on unicorn: delegation to S mode, the registers a
handler reads, and the faulting address unicorn keeps only inside its saved context."""

from __future__ import annotations

import io
import struct

import pytest
from unicorn import riscv_const as rv

from qemuser.system.boards import BOARDS
from qemuser.system.machine import Machine, MachineConfig

CODE, TABLE, HANDLER = 0x8000_0000, 0x8010_0000, 0x8000_1000
LOAD_A0_FROM_A1, STORE_A0_TO_A1, JUMP_TO_A1 = 0x0005B503, 0x00A5B023, 0x00058067
PAGE_FAULTS = {"fetch": 12, "load": 13, "store": 15}


def paged_s_mode_machine() -> Machine:
    """S mode with Sv39 paging: one identity gigapage over RAM, nothing else mapped; page
    faults delegated to S mode, as firmware sets them up."""
    machine = Machine(
        MachineConfig(board=BOARDS["riscv64"]["virt"], ram_size=128 << 20), io.BytesIO()
    )
    uc = machine.uc
    uc.mem_write(TABLE + 8 * 2, struct.pack("<Q", (CODE >> 12) << 10 | 0xCF))  # V R W X A D
    uc.reg_write(rv.UC_RISCV_REG_MEDELEG, 1 << 12 | 1 << 13 | 1 << 15)
    uc.reg_write(rv.UC_RISCV_REG_STVEC, HANDLER)
    uc.reg_write(rv.UC_RISCV_REG_SATP, 8 << 60 | TABLE >> 12)
    return machine


@pytest.mark.parametrize("kind", ["fetch", "load", "store"])
def test_page_fault_enters_stvec_with_cause_epc_and_faulting_address(kind: str) -> None:
    machine = paged_s_mode_machine()
    uc = machine.uc
    insn = {"fetch": JUMP_TO_A1, "load": LOAD_A0_FROM_A1, "store": STORE_A0_TO_A1}[kind]
    uc.mem_write(CODE, struct.pack("<I", insn))
    bad = 0x1234_5678 if kind != "fetch" else 0x4567_8000
    uc.reg_write(rv.UC_RISCV_REG_A1, bad)
    uc.reg_write(rv.UC_RISCV_REG_PRIV, 1)
    uc.emu_start(CODE, HANDLER, count=2)
    assert uc.reg_read(rv.UC_RISCV_REG_PC) == HANDLER
    assert uc.reg_read(rv.UC_RISCV_REG_PRIV) == 1
    assert uc.reg_read(rv.UC_RISCV_REG_SCAUSE) == PAGE_FAULTS[kind]
    assert uc.reg_read(rv.UC_RISCV_REG_SEPC) == (bad if kind == "fetch" else CODE)
    assert uc.reg_read(rv.UC_RISCV_REG_STVAL) == bad
    assert uc.reg_read(rv.UC_RISCV_REG_SSTATUS) & 1 << 8  # SPP: came from S mode


def test_undelegated_fault_goes_to_machine_mode() -> None:
    machine = paged_s_mode_machine()
    uc = machine.uc
    uc.reg_write(rv.UC_RISCV_REG_MEDELEG, 0)
    uc.reg_write(rv.UC_RISCV_REG_MTVEC, HANDLER + 0x100)
    uc.mem_write(CODE, struct.pack("<I", LOAD_A0_FROM_A1))
    uc.reg_write(rv.UC_RISCV_REG_A1, 0x1234_5000)
    uc.reg_write(rv.UC_RISCV_REG_PRIV, 1)
    uc.emu_start(CODE, HANDLER + 0x100, count=2)
    assert uc.reg_read(rv.UC_RISCV_REG_PRIV) == 3
    assert uc.reg_read(rv.UC_RISCV_REG_PC) == HANDLER + 0x100
    assert uc.reg_read(rv.UC_RISCV_REG_MCAUSE) == 13
    assert uc.reg_read(rv.UC_RISCV_REG_MTVAL) == 0x1234_5000
    assert (uc.reg_read(rv.UC_RISCV_REG_MSTATUS) >> 11) & 3 == 1  # MPP: from S mode


def test_rdtime_reads_the_clint_through_the_page_table() -> None:
    machine = paged_s_mode_machine()
    uc = machine.uc
    assert machine.timer is not None
    uc.mem_write(CODE, struct.pack("<II", 0xC0102573, 0xC01025F3))  # rdtime a0; rdtime a1
    uc.reg_write(rv.UC_RISCV_REG_PRIV, 1)
    before = machine.timer.mtime()
    uc.emu_start(CODE, CODE + 8, count=2)
    first, second = uc.reg_read(rv.UC_RISCV_REG_A0), uc.reg_read(rv.UC_RISCV_REG_A1)
    assert before <= first <= second <= machine.timer.mtime()
    assert uc.reg_read(rv.UC_RISCV_REG_PC) == CODE + 8
