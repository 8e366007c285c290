"""Alignment faults: the traps Linux answers with SIGBUS, si_code BUS_ADRALN.

unicorn reports them by trap number only (it writes neither ESR/FAR nor stval), so the
faulting address is worked out from the instruction, as the kernel reads it from FAR/stval:

- aarch64: a branch to a pc that is not a multiple of 4 comes as an undefined instruction
  (trap 1) with pc at the misaligned address (QEMU's PC alignment exception, EC 0x22; Linux's
  do_sp_pc_abort: si_addr = pc). A misaligned exclusive, acquire/release or atomic access comes
  as a data abort (trap 4) with pc at the instruction (do_alignment_fault: si_addr = the
  address, which those instructions take from Xn alone, no offset).
- riscv64: a misaligned LR/SC/AMO comes as trap 4 or 6 (load, store/AMO address misaligned);
  the kernel emulates misaligned plain loads and stores but not atomics, which get SIGBUS with
  si_addr = stval = rs1.

Each function returns the si_addr of the alignment fault, or None when the trap is another.
"""

from __future__ import annotations

from unicorn import Uc
from unicorn.arm64_const import UC_ARM64_REG_SP, UC_ARM64_REG_X0, UC_ARM64_REG_X29, UC_ARM64_REG_X30
from unicorn.riscv_const import UC_RISCV_REG_X0

_A64_UNDEFINED = 1
_A64_DATA_ABORT = 4
_A64_X_REGS = [UC_ARM64_REG_X0 + n for n in range(29)] + [UC_ARM64_REG_X29, UC_ARM64_REG_X30]
_RV_MISALIGNED = (4, 6)  # load address misaligned, store/AMO address misaligned
_RV_AMO_OPCODE = 0x2F


def _instruction(uc: Uc, pc: int) -> int | None:
    try:
        return int.from_bytes(uc.mem_read(pc, 4), "little")
    except Exception:  # noqa: BLE001  (unicorn's UcError: the pc itself is unreadable)
        return None


def aarch64_alignment_trap(uc: Uc, intno: int, pc: int) -> int | None:
    if intno == _A64_UNDEFINED:
        return pc if pc % 4 else None
    if intno != _A64_DATA_ABORT:
        return None
    insn = _instruction(uc, pc)
    if insn is None:
        return None
    rn = (insn >> 5) & 0x1F
    return uc.reg_read(UC_ARM64_REG_SP if rn == 31 else _A64_X_REGS[rn])


def riscv64_alignment_trap(uc: Uc, intno: int, pc: int) -> int | None:
    if intno not in _RV_MISALIGNED:
        return None
    insn = _instruction(uc, pc)
    if insn is None or insn & 0x7F != _RV_AMO_OPCODE:
        return None
    rs1 = (insn >> 15) & 0x1F
    return uc.reg_read(UC_RISCV_REG_X0 + rs1) if rs1 else 0
