"""The per-access exit checks of unicorn (qemuser/cpu/exit_checks.py): found on both cores, and
doing what they say: a memory hook that stops the guest stops it right at the access only while
the checks are on."""

from __future__ import annotations

import pytest
from unicorn import UC_HOOK_MEM_READ, UC_PROT_ALL, Uc
from unicorn.arm64_const import UC_ARM64_REG_PC, UC_ARM64_REG_X1
from unicorn.riscv_const import UC_RISCV_REG_PC, UC_RISCV_REG_X10

from qemuser.cpu import CPUS
from qemuser.cpu.exit_checks import ExitChecks

CODE = 0x10000
DATA = 0x20000

# Three loads from DATA then an end marker; the block is translated as one.
PROGRAMS = {
    # ldr x0,[x1]; ldr x0,[x1]; ldr x0,[x1]; nop
    "aarch64": (
        bytes.fromhex("200040f9200040f9200040f91f2003d5"),
        UC_ARM64_REG_X1,
        UC_ARM64_REG_PC,
    ),
    # ld a1,0(a0); ld a1,0(a0); ld a1,0(a0); nop
    "riscv64": (
        bytes.fromhex("83350500833505008335050013000000"),
        UC_RISCV_REG_X10,
        UC_RISCV_REG_PC,
    ),
}


def _engine(arch: str) -> tuple[Uc, ExitChecks, int]:
    code, base_reg, pc = PROGRAMS[arch]
    uc = CPUS[arch].new_engine()
    checks = ExitChecks(uc)
    uc.mem_map(CODE, 0x1000, UC_PROT_ALL)
    uc.mem_map(DATA, 0x1000, UC_PROT_ALL)
    uc.mem_write(CODE, code)
    uc.reg_write(base_reg, DATA)
    uc.hook_add(UC_HOOK_MEM_READ, lambda uc, *_: uc.emu_stop())
    return uc, checks, pc


@pytest.mark.parametrize("arch", sorted(PROGRAMS))
def test_found_on_the_pinned_unicorn(arch: str) -> None:
    assert ExitChecks(CPUS[arch].new_engine()).available


@pytest.mark.parametrize("arch", sorted(PROGRAMS))
def test_a_stop_from_a_memory_hook_is_exact_only_with_checks(arch: str) -> None:
    uc, checks, pc = _engine(arch)
    with checks.exact_stops():
        uc.emu_start(CODE, CODE + 16)
    assert uc.reg_read(pc) == CODE  # stopped at the first load (pc names the access)

    assert checks.skip()
    uc.ctl_flush_tb()
    uc.emu_start(CODE, CODE + 16)
    assert uc.reg_read(pc) == CODE + 16  # the block ran on to its end, the until address

    with checks.exact_stops():  # and back on again, for a block translated with checks off
        uc.emu_start(CODE, CODE + 16)
    assert uc.reg_read(pc) == CODE
