"""An aarch64 process at EL0, as Linux runs it, and the ID registers Linux lets it read.

unicorn starts the core at EL1, where every system register is readable: a guest reading
ID_AA64PFR0_EL1 there would see the raw register, bits Linux hides included. Linux runs a
process at EL0, where an MRS of an ID register traps; arm64's cpufeature code then emulates
the read (HWCAP_CPUID) with the *sanitised* value: the fields user space may see, from the
CPU, and every other field at its "safe" value (Documentation/arch/arm64/
cpu-feature-registers.rst). qemuser does the same: the guest runs at EL0, so the MRS traps
as an undefined instruction (unicorn's trap 1, pc at the MRS), and `user_value` gives the
value Linux would (qemuser.user.linux writes it to Xt). Ordinary code pays nothing: unlike
an MRS hook, which would call into Python for every `mrs tpidr_el0` (glibc reads it for each
TLS access), only the reads Linux itself emulates trap.

At EL0 the core also checks the controls Linux sets in SCTLR_EL1 for user space (cache
maintenance, CTR_EL0 and DC ZVA allowed, WFI/WFE not trapped), CNTKCTL_EL1 (the virtual
counter readable) and CPACR_EL1 (FP/SIMD, and SVE where it is advertised): `enter_el0`
sets them as the kernel does for every task; the SVE state follows Linux's (below).
"""

from __future__ import annotations

from unicorn import Uc
from unicorn import arm64_const as a

# (op0, op1, CRn, CRm, op2)
SysReg = tuple[int, int, int, int, int]
SCTLR_EL1: SysReg = (3, 0, 1, 0, 0)
CPACR_EL1: SysReg = (3, 0, 1, 0, 2)
CNTKCTL_EL1: SysReg = (3, 0, 14, 1, 0)
CPTR_EL3: SysReg = (3, 6, 1, 1, 2)
MIDR_EL1: SysReg = (3, 0, 0, 0, 0)
MPIDR_EL1: SysReg = (3, 0, 0, 0, 5)
REVIDR_EL1: SysReg = (3, 0, 0, 0, 6)
ID_AA64PFR0_EL1: SysReg = (3, 0, 0, 4, 0)
ID_AA64PFR1_EL1: SysReg = (3, 0, 0, 4, 1)
ID_AA64ZFR0_EL1: SysReg = (3, 0, 0, 4, 4)
ID_AA64SMFR0_EL1: SysReg = (3, 0, 0, 4, 5)
ID_AA64DFR0_EL1: SysReg = (3, 0, 0, 5, 0)
ID_AA64ISAR0_EL1: SysReg = (3, 0, 0, 6, 0)
ID_AA64ISAR1_EL1: SysReg = (3, 0, 0, 6, 1)
ID_AA64ISAR2_EL1: SysReg = (3, 0, 0, 6, 2)
ID_AA64MMFR0_EL1: SysReg = (3, 0, 0, 7, 0)
ID_AA64MMFR1_EL1: SysReg = (3, 0, 0, 7, 1)
ID_AA64MMFR2_EL1: SysReg = (3, 0, 0, 7, 2)

# SCTLR_EL1 bits Linux sets for EL0 (arch/arm64/include/asm/sysreg.h, INIT_SCTLR_EL1_MMU_ON):
# DC CVAU/IC IVAU (UCI), CTR_EL0 (UCT) and DC ZVA (DZE) allowed, WFE/WFI not trapped.
SCTLR_UCI, SCTLR_NTWE, SCTLR_NTWI = 1 << 26, 1 << 18, 1 << 16
SCTLR_UCT, SCTLR_DZE = 1 << 15, 1 << 14
CNTKCTL_EL0VCTEN = 1 << 1  # CNTVCT_EL0 (and CNTFRQ_EL0) readable; the physical counter is not
CPACR_FPEN_EL0 = 3 << 20  # FP/SIMD at EL0 and EL1
CPACR_ZEN_EL1 = 1 << 16  # SVE at EL1 only: EL0's first SVE instruction traps (sve_first_use)
CPTR_EL3_EZ = 1 << 8  # SVE not trapped to EL3


# One field of a feature register as arm64's cpufeature.c describes it: (shift, visible,
# safe, width). A visible field shows the CPU's value, any other its safe value. Plain
# tuples, not a dataclass: the table is built at every start.
FtrField = tuple[int, bool, int, int]


def _f(shift: int, visible: bool, safe: int = 0, width: int = 4) -> FtrField:
    return (shift, visible, safe, width)


V, H = True, False
# The feature registers Linux emulates, field by field (arch/arm64/kernel/cpufeature.c,
# ftr_id_aa64*): bits in no field are RES0 and read as 0. Fields for what qemuser does not
# implement (below: UNSUPPORTED) are shown as a kernel built without it shows them.
FTR_REGS: dict[SysReg, tuple[FtrField, ...]] = {
    ID_AA64PFR0_EL1: (
        _f(60, H),  # CSV3
        _f(56, H),  # CSV2
        _f(48, V),  # DIT
        _f(44, H),  # AMU
        _f(40, H),  # MPAM
        _f(36, H),  # SEL2
        _f(32, V),  # SVE
        _f(28, H),  # RAS
        _f(24, H),  # GIC
        _f(20, V, 0xF),  # AdvSIMD (signed; safe: not implemented)
        _f(16, V, 0xF),  # FP (signed; safe: not implemented)
        _f(12, H),  # EL3
        _f(8, H),  # EL2
        _f(4, H, 1),  # EL1: AArch64 only
        _f(0, H, 1),  # EL0: AArch64 only
    ),
    ID_AA64PFR1_EL1: (
        _f(24, V),  # SME
        _f(20, H),  # MPAM_frac
        _f(16, H),  # RAS_frac
        _f(8, V),  # MTE
        _f(4, V),  # SSBS
        _f(0, V),  # BT
    ),
    ID_AA64ZFR0_EL1: tuple(_f(s, V) for s in (56, 52, 44, 40, 32, 20, 16, 4, 0)),
    ID_AA64SMFR0_EL1: (
        _f(63, V, width=1),  # FA64
        _f(56, V),  # SMEver
        _f(52, V),  # I16I64
        _f(48, V, width=1),  # F64F64
        _f(44, V),  # I16I32
        _f(43, V, width=1),  # B16B16
        _f(42, V, width=1),  # F16F16
        _f(36, V),  # I8I32
        _f(35, V, width=1),  # F16F32
        _f(34, V, width=1),  # B16F32
        _f(33, V, width=1),  # BI32I32
        _f(32, V, width=1),  # F32F32
    ),
    ID_AA64DFR0_EL1: (
        _f(36, H),  # DoubleLock
        _f(32, H),  # PMSVer
        _f(28, H),  # CTX_CMPs
        _f(20, H),  # WRPs
        _f(12, H),  # BRPs
        _f(8, H),  # PMUVer
        _f(0, H, 6),  # DebugVer: ARMv8.0 debug
    ),
    ID_AA64ISAR0_EL1: (
        _f(60, V),  # RNDR
        _f(56, H),  # TLB
        *(_f(s, V) for s in (52, 48, 44, 40, 36, 32, 28, 20, 16, 12, 8, 4)),
    ),
    ID_AA64ISAR1_EL1: (
        _f(52, V),  # I8MM
        _f(48, V),  # DGH
        _f(44, V),  # BF16
        _f(40, H),  # SPECRES
        *(_f(s, V) for s in (36, 32, 28, 24, 20, 16, 12, 8, 4, 0)),  # SB ... DPB
    ),
    ID_AA64ISAR2_EL1: (
        _f(52, V),  # CSSC
        _f(48, V),  # RPRFM
        _f(28, H),  # BC
        _f(12, V),  # APA3
        _f(8, V),  # GPA3
        _f(4, V),  # RPRES
        _f(0, V),  # WFxT
    ),
    ID_AA64MMFR0_EL1: (
        _f(60, V),  # ECV
        _f(56, H),  # FGT
        _f(44, H),  # EXS
        _f(40, H, 1),  # TGRAN4_2
        _f(36, H, 1),  # TGRAN64_2
        _f(32, H, 1),  # TGRAN16_2
        _f(28, H, 0xF),  # TGRAN4: not implemented is the safe value
        _f(24, H, 0xF),  # TGRAN64
        _f(20, H),  # TGRAN16
        _f(16, H),  # BIGENDEL0
        _f(12, H),  # SNSMEM
        _f(8, H),  # BIGEND
        _f(4, H),  # ASIDBITS
        _f(0, H),  # PARANGE
    ),
    ID_AA64MMFR1_EL1: (
        _f(52, H),  # TIDCP1
        _f(44, V),  # AFP
        *(_f(s, H) for s in (36, 32, 28, 24, 20, 16, 12, 8, 4, 0)),
    ),
    ID_AA64MMFR2_EL1: (
        *(_f(s, H) for s in (60, 56, 52, 48, 40, 36)),  # E0PD EVT BBM TTL FWB IDS
        _f(32, V),  # AT
        *(_f(s, H) for s in (28, 24, 20, 16, 12, 8, 4, 0)),
    ),
}

# MIDR_EL1 is the CPU's own; MPIDR_EL1 reads as its safe value (bit 31 RES1 only: no topology
# leaks); REVIDR_EL1, IMPLEMENTATION DEFINED, as 0 (cpufeature.c, emulate_id_reg).
MPIDR_SAFE = 1 << 31


def _field(value: int, shift: int, width: int = 4) -> int:
    return (value >> shift) & ((1 << width) - 1)


def sanitise(reg: SysReg, raw: int, hidden: tuple[tuple[SysReg, int], ...] = ()) -> int:
    """The value Linux gives an EL0 read of feature register `reg` whose CPU value is `raw`;
    `hidden` lists (register, shift) of fields shown as absent (features not supported)."""
    value = 0
    for shift, visible, safe, width in FTR_REGS.get(reg, ()):
        field = _field(raw, shift, width) if visible else safe
        if (reg, shift) in hidden:
            field = 0
        value |= field << shift
    return value


def enter_el0(uc: Uc, sve: bool) -> None:
    """Put the core where Linux runs a task: EL0 with SP_EL0, nothing masked, the user-space
    controls of SCTLR_EL1/CNTKCTL_EL1 set, FP/SIMD enabled; with `sve`, SVE set up to be
    enabled at the task's first SVE instruction, as Linux does (sve_first_use)."""
    sctlr = uc.cpr_read(*SCTLR_EL1)  # type: ignore[attr-defined]
    sctlr |= SCTLR_UCI | SCTLR_NTWE | SCTLR_NTWI | SCTLR_UCT | SCTLR_DZE
    cpacr = uc.cpr_read(*CPACR_EL1) | CPACR_FPEN_EL0  # type: ignore[attr-defined]
    if sve:
        cpacr |= CPACR_ZEN_EL1
        uc.cpr_write(*CPTR_EL3, uc.cpr_read(*CPTR_EL3) | CPTR_EL3_EZ)  # type: ignore[attr-defined]
    uc.cpr_write(*CPACR_EL1, cpacr)  # type: ignore[attr-defined]
    uc.cpr_write(*CNTKCTL_EL1, uc.cpr_read(*CNTKCTL_EL1) | CNTKCTL_EL0VCTEN)  # type: ignore[attr-defined]
    # EL0t, DAIF clear, flags clear. unicorn caches the exception level: the CP write after
    # the PSTATE write is what makes it take the new one (UNICORN-NOTES, system level).
    uc.reg_write(a.UC_ARM64_REG_PSTATE, 0)
    uc.cpr_write(*SCTLR_EL1, sctlr)  # type: ignore[attr-defined]


_MRS_MASK, _MRS_BITS = 0xFFF0_0000, 0xD530_0000  # MRS Xt, (op0 = 2|3 ...): L = 1, bits 31:20


def decode_mrs(insn: int) -> tuple[SysReg, int] | None:
    """(register, Rt) when `insn` is an MRS, else None."""
    if insn & _MRS_MASK != _MRS_BITS:
        return None
    op0 = 2 + (insn >> 19 & 1)
    op1 = insn >> 16 & 7
    crn = insn >> 12 & 0xF
    crm = insn >> 8 & 0xF
    op2 = insn >> 5 & 7
    return (op0, op1, crn, crm, op2), insn & 0x1F


def _is_emulated(reg: SysReg) -> bool:
    """The MRS space Linux emulates: op0 3, op1 0, CRn 0, CRm 0 or 2-7 (cpufeature.c,
    is_emulated). CRm 1 and everything else stays an undefined instruction: SIGILL."""
    op0, op1, crn, crm, _op2 = reg
    return op0 == 3 and op1 == 0 and crn == 0 and (crm == 0 or 2 <= crm <= 7)


def user_value(uc: Uc, reg: SysReg, hidden: tuple[tuple[SysReg, int], ...]) -> int | None:
    """What an EL0 MRS of `reg` reads under Linux, or None when Linux gives SIGILL."""
    if not _is_emulated(reg):
        return None
    if reg[3] == 0:  # CRm 0: only the identification registers
        if reg == MIDR_EL1:
            return uc.cpr_read(*MIDR_EL1)  # type: ignore[attr-defined]
        if reg == MPIDR_EL1:
            return MPIDR_SAFE
        if reg == REVIDR_EL1:
            return 0
        return None
    if reg not in FTR_REGS:
        return 0  # IMPLEMENTATION DEFINED or reserved: RAZ
    return sanitise(reg, uc.cpr_read(*reg), hidden)  # type: ignore[attr-defined]


# ---- SVE state, as Linux keeps it ---------------------------------------------------------
# Linux enables SVE for a task at its first SVE instruction (the access trap: do_sve_acc sets
# TIF_SVE, with P0-P15 and FFR zero), and a signal frame carries the SVE registers only for a
# task that has them (qemuser.syscalls.abi.sigframe). At a system call P0-P15 and FFR become
# zero (Documentation/arch/arm64/sve.rst): as Linux 5.x did, EL0's SVE enable is dropped at
# each call (sve_discard), so the next SVE instruction traps and starts from zeroed
# predicates. Here EL0's SVE enable (CPACR_EL1.ZEN bit 1) is TIF_SVE; being in the engine's
# state, it is saved and restored with each thread's context.
_SVE_CLASS_MASK, _SVE_CLASS = 0x1E00_0000, 0x0400_0000  # op0 bits 28:25 = 0010: SVE


def sve_first_use(uc: Uc, pc: int, insn: int) -> bool:
    """An undefined-instruction trap at `pc` of `insn`: when it is an SVE instruction of a
    task whose SVE is set up but not enabled, enable it with zeroed predicates and run the
    instruction again; True when it was that."""
    from qemuser.cpu.aarch64 import (
        SVE_PREDICATE_BYTES,
        SvePredicates,
        set_sve_enabled,
        sve_enabled,
        sve_predicates,
        sve_supported,
    )

    if insn & _SVE_CLASS_MASK != _SVE_CLASS or not sve_supported(uc) or sve_enabled(uc):
        return False  # not SVE, or SVE that is undefined even when enabled: SIGILL
    sve_predicates(uc).write([bytes(SVE_PREDICATE_BYTES)] * SvePredicates.COUNT)
    set_sve_enabled(uc, True)
    # pc is left at the instruction, and the engine stopped: the run loop starts it there
    # again, now enabled. (Writing pc from the hook without a stop made Debian's python3.11
    # crash in glibc's SVE memcpy after a few hundred such traps.)
    uc.emu_stop()
    return True


def sve_discard(uc: Uc) -> None:
    """At a system call of a task that may have SVE state: drop it (see above)."""
    from qemuser.cpu.aarch64 import set_sve_enabled

    set_sve_enabled(uc, False)
