"""The riscv hart's `time` CSR: unicorn has no time source (rdtime raises illegal instruction),
and arch/rdtime.py gives the engine one, so rdtime runs without a trap (arch/riscv64.py keeps
emulating it from the trap where the engine's layout is not the known one)."""

from __future__ import annotations

import io
import struct

from unicorn import UC_ARCH_RISCV, UC_HOOK_INTR, UC_MODE_RISCV64, Uc
from unicorn import riscv_const as rv

from qemuser.system.arch import rdtime
from qemuser.system.boards import BOARDS
from qemuser.system.machine import Machine, MachineConfig
from qemuser.system.smp import Topology

CODE = 0x8000_0000
RDTIME_A0 = 0xC0102573  # csrr a0, time
RDTIME_A1 = 0xC01025F3  # csrr a1, time


def engine_with(code: list[int]) -> tuple[Uc, list[int]]:
    uc = Uc(UC_ARCH_RISCV, UC_MODE_RISCV64)
    uc.mem_map(CODE, 0x1000)
    uc.mem_write(CODE, b"".join(struct.pack("<I", insn) for insn in code))
    traps: list[int] = []
    uc.hook_add(UC_HOOK_INTR, lambda _uc, intno, _data: (traps.append(intno), _uc.emu_stop()))
    return uc, traps


def test_unicorn_alone_traps_at_rdtime() -> None:
    uc, traps = engine_with([RDTIME_A0])
    uc.emu_start(CODE, CODE + 4)
    assert traps == [2]  # illegal instruction: why the slot is filled


def test_installed_source_answers_rdtime_without_a_trap() -> None:
    uc, traps = engine_with([RDTIME_A0, RDTIME_A1])
    values = iter((0x1234_5678_9ABC, 0xFFFF_FFFF_FFFF_FFFF))
    callback = rdtime.install(uc, lambda: next(values))
    assert callback is not None
    uc.emu_start(CODE, CODE + 8)
    assert traps == []
    assert uc.reg_read(rv.UC_RISCV_REG_A0) == 0x1234_5678_9ABC
    assert uc.reg_read(rv.UC_RISCV_REG_A1) == 0xFFFF_FFFF_FFFF_FFFF


def test_install_leaves_the_registers_as_they_were() -> None:
    uc, _traps = engine_with([RDTIME_A0])
    uc.reg_write(rv.UC_RISCV_REG_SP, 0x8000_0FF0)
    assert rdtime.install(uc, lambda: 7) is not None
    assert uc.reg_read(rv.UC_RISCV_REG_SP) == 0x8000_0FF0
    assert [uc.reg_read(rv.UC_RISCV_REG_X1 + i) for i in range(31) if i != 1] == [0] * 30


def test_a_machine_hart_reads_the_clint_clock_in_s_mode() -> None:
    machine = Machine(
        MachineConfig(board=BOARDS["riscv64"]["virt"], ram_size=128 << 20), io.BytesIO()
    )
    uc = machine.uc
    uc.mem_write(CODE, struct.pack("<2I", RDTIME_A0, RDTIME_A1))
    uc.reg_write(rv.UC_RISCV_REG_MCOUNTEREN, 2)  # TM: S mode may read time
    uc.reg_write(rv.UC_RISCV_REG_PRIV, 1)
    clint = machine.timer
    assert clint is not None
    before = clint.mtime()
    uc.emu_start(CODE, CODE + 8)
    after = clint.mtime()
    first, second = uc.reg_read(rv.UC_RISCV_REG_A0), uc.reg_read(rv.UC_RISCV_REG_A1)
    assert before <= first <= second <= after


def test_every_hart_of_an_smp_machine_reads_time_without_a_trap() -> None:
    # Each engine is searched with its own register values: a copy left by another engine's
    # search once made every hart but the first keep trapping.
    machine = Machine(
        MachineConfig(
            board=BOARDS["riscv64"]["virt"],
            ram_size=128 << 20,
            smp=Topology(4, cores=4, maxcpus=4),
        ),
        io.BytesIO(),
    )
    machine.uc.mem_write(CODE, struct.pack("<I", RDTIME_A0))  # RAM is shared by the engines
    for engine in machine.engines:
        traps: list[int] = []
        engine.hook_add(UC_HOOK_INTR, lambda _uc, intno, _data, t=traps: t.append(intno))
        engine.emu_start(CODE, CODE + 4)
        assert traps == []
        assert engine.reg_read(rv.UC_RISCV_REG_A0) > 0
