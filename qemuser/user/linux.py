"""Linux's per-architecture facts about a process: hwcaps, uname, layout, /proc/cpuinfo.

Kept in the user-mode runtime (not in qemuser/cpu/) so that the CPU specs stay free of Linux;
what differs per arch is data here (LINUX_ARCHES), never a branch on the arch's name elsewhere.
Hwcaps are derived from the emulated core's own ID registers, as the kernel's cpufeature code
does, so that `-cpu cortex-a53` gets no LSE atomics and `-cpu max` gets them: what glibc sees is
true to the CPU it runs on.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

from unicorn import Uc
from unicorn.riscv_const import UC_RISCV_REG_MISA

from qemuser.cpu import CpuSpec
from qemuser.cpu.aarch64 import SVE_MAYBE_ON, sve_state_restored
from qemuser.user.misaligned import aarch64_alignment_trap, riscv64_alignment_trap
from qemuser.user.pauth import address_auth, enable_pointer_auth, generic_auth
from qemuser.user.sysregs import (
    ID_AA64ISAR0_EL1,
    ID_AA64ISAR1_EL1,
    ID_AA64MMFR2_EL1,
    ID_AA64PFR0_EL1,
    ID_AA64PFR1_EL1,
    SysReg,
    decode_mrs,
    enter_el0,
    sanitise,
    sve_discard,
    sve_first_use,
    user_value,
)

# si_code values of the signals traps raise (include/uapi/asm-generic/siginfo.h)
ILL_ILLOPC = 1
SEGV_MAPERR = 1
TRAP_BRKPT = 1
BUS_ADRALN = 1
BUS_ADRERR = 2


# eq=False: compared by identity only; every start would compile the generated __eq__.
@dataclass(frozen=True, eq=False)
class LinuxArch:
    """What Linux does differently per architecture: names, address-space limits."""

    uname_machine: str
    platform: bytes | None  # AT_PLATFORM (riscv64's kernel sets none)
    task_size: int  # the end of user space: mappings past it fail with ENOMEM
    has_hwcap2: bool  # the kernel defines ELF_HWCAP2 (arm64 does, riscv does not)
    stack_top: int  # top of the initial stack (below TASK_SIZE)
    mmap_top: int  # mmap() allocates top-down from here
    pie_base: int  # where an ET_DYN main program goes (ELF_ET_DYN_BASE)
    interp_base_gap: int  # the interpreter goes this far below mmap_top
    minsigstksz: int  # AT_MINSIGSTKSZ, or 0 where the kernel gives none
    # What Linux does when the guest's instruction traps (arch/*/kernel/traps.c). unicorn
    # reports an exception by number (UC_HOOK_INTR) or, for some, as an invalid instruction
    # that ends emu_start; the kernel turns each into a signal.
    trap_signals: dict[int, tuple[int, int]]  # trap number -> (signal, si_code)
    trap_default: tuple[int, int]  # any other trap number
    pc_past_trap: int  # unicorn leaves pc this far past the trapping instruction
    # trap number -> what the kernel emulates for it instead of a signal; called with the
    # engine and the instruction's address, True when it was that instruction and is done
    emulated_traps: dict[int, Callable[[Uc, int], bool]]
    # (engine, trap number, pc) -> si_addr when that trap is an alignment fault, which Linux
    # answers with SIGBUS / BUS_ADRALN (qemuser.user.misaligned); None for any other trap
    alignment_trap: Callable[[Uc, int, int], int | None]
    # what the kernel sets up in the core at execve, beyond the registers of the initial
    # stack (aarch64: pointer authentication with fresh keys, qemuser.user.pauth)
    prepare_engine: Callable[[Uc], object]
    # (size, encoding) of breakpoint instructions unicorn reports as invalid ones (SIGTRAP)
    breakpoints: tuple[tuple[int, int], ...]
    read_hwcaps: Callable[[Uc], tuple[int, int]]  # (AT_HWCAP, AT_HWCAP2) from the core
    # what the kernel does to the FP state at every system call once syscall_discard_flag[0]
    # is true (aarch64: P0-P15/FFR become zero, qemuser.user.sysregs.sve_discard); a one-item
    # list so that the run loop tests it without a call
    syscall_discard_flag: list[bool]
    syscall_discard: Callable[[Uc], None]
    # called when another thread's saved CPU state is put back into the engine (it may carry
    # state that syscall_discard_flag[0] has to account for again)
    context_restored: Callable[[], None]
    cpuinfo: Callable[[Uc, int, str], str]  # /proc/cpuinfo from (engine, AT_HWCAP, model)


def _field(value: int, shift: int) -> int:
    return (value >> shift) & 0xF


def _signed_field(value: int, shift: int) -> int:
    v = _field(value, shift)
    return v - 16 if v >= 8 else v


def aarch64_hwcaps(uc: Uc) -> tuple[int, int]:
    """(AT_HWCAP, AT_HWCAP2) from ID_AA64* registers, as arch/arm64/kernel/cpufeature.c does.

    Derived from the sanitised registers (qemuser.user.sysregs), so that BTI, MTE and SME,
    which qemuser does not give the guest (AARCH64_HIDDEN_FIELDS), are in neither. SVE2 and
    the other ID_AA64ZFR0 features are absent from the core (ZFR0 = 0).
    """

    def idreg(reg: SysReg) -> int:  # the sanitised value, as the kernel derives hwcaps from
        return sanitise(reg, uc.cpr_read(*reg), AARCH64_HIDDEN_FIELDS)  # type: ignore[attr-defined]

    isar0 = idreg(ID_AA64ISAR0_EL1)
    isar1 = idreg(ID_AA64ISAR1_EL1)
    pfr0 = idreg(ID_AA64PFR0_EL1)
    pfr1 = idreg(ID_AA64PFR1_EL1)
    mmfr2 = idreg(ID_AA64MMFR2_EL1)
    fp = _signed_field(pfr0, 16)
    simd = _signed_field(pfr0, 20)
    caps = {
        0: fp >= 0,  # FP
        1: simd >= 0,  # ASIMD
        3: _field(isar0, 4) >= 1,  # AES
        4: _field(isar0, 4) >= 2,  # PMULL
        5: _field(isar0, 8) >= 1,  # SHA1
        6: _field(isar0, 12) >= 1,  # SHA2
        7: _field(isar0, 16) >= 1,  # CRC32
        8: _field(isar0, 20) >= 2,  # ATOMICS (LSE)
        9: fp >= 1,  # FPHP
        10: simd >= 1,  # ASIMDHP
        11: True,  # CPUID: EL0 reads of ID registers are emulated (emulate_aarch64_undefined)
        12: _field(isar0, 28) >= 1,  # ASIMDRDM
        13: _field(isar1, 12) >= 1,  # JSCVT
        14: _field(isar1, 16) >= 1,  # FCMA
        15: _field(isar1, 20) >= 1,  # LRCPC
        16: _field(isar1, 0) >= 1,  # DCPOP
        17: _field(isar0, 32) >= 1,  # SHA3
        18: _field(isar0, 36) >= 1,  # SM3
        19: _field(isar0, 40) >= 1,  # SM4
        20: _field(isar0, 44) >= 1,  # ASIMDDP
        21: _field(isar0, 12) >= 2,  # SHA512
        22: _field(pfr0, 32) >= 1,  # SVE (at the core's one vector length, 16 bytes)
        23: _field(isar0, 48) >= 1,  # ASIMDFHM
        24: _field(pfr0, 48) >= 1,  # DIT
        25: _field(mmfr2, 32) >= 1,  # USCAT
        26: _field(isar1, 20) >= 2,  # ILRCPC
        27: _field(isar0, 52) >= 1,  # FLAGM
        28: _field(pfr1, 4) >= 2,  # SSBS
        29: _field(isar1, 36) >= 1,  # SB
        # PACA, PACG: the keys and enables are set at exec (qemuser.user.pauth)
        30: address_auth(isar1),
        31: generic_auth(isar1),
    }
    caps2 = {
        0: _field(isar1, 0) >= 2,  # DCPODP
        7: _field(isar0, 52) >= 2,  # FLAGM2
        8: _field(isar1, 32) >= 1,  # FRINT
        16: _field(isar0, 60) >= 1,  # RNG
    }
    hwcap = sum(1 << bit for bit, present in caps.items() if present)
    hwcap2 = sum(1 << bit for bit, present in caps2.items() if present)
    return hwcap, hwcap2


RISCV_HWCAP_LETTERS = "IMAFDQCV"  # the single-letter extensions the kernel reports


def riscv64_hwcaps(uc: Uc) -> tuple[int, int]:
    misa = uc.reg_read(UC_RISCV_REG_MISA)
    hwcap = 0
    for letter in RISCV_HWCAP_LETTERS:
        bit = 1 << (ord(letter) - ord("A"))
        if misa & bit:
            hwcap |= bit
    return hwcap, 0


def hwcaps(spec: CpuSpec, uc: Uc) -> tuple[int, int | None]:
    """(AT_HWCAP, AT_HWCAP2) of the emulated core; AT_HWCAP2 is None where the arch's kernel
    gives none (no ELF_HWCAP2), so that the initial stack leaves the entry out."""
    linux = LINUX_ARCHES[spec.name]
    hwcap, hwcap2 = linux.read_hwcaps(uc)
    return hwcap, hwcap2 if linux.has_hwcap2 else None


AARCH64_HWCAP_NAMES = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
    "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg"
).split()


def cpuinfo(spec: CpuSpec, uc: Uc, model_name: str) -> str:
    """/proc/cpuinfo for one guest CPU, in the kernel's format for the arch."""
    hwcap, _ = hwcaps(spec, uc)
    return LINUX_ARCHES[spec.name].cpuinfo(uc, hwcap, model_name)


def aarch64_cpuinfo(uc: Uc, hwcap: int, model_name: str) -> str:
    midr = uc.cpr_read(3, 0, 0, 0, 0)  # type: ignore[attr-defined]
    features = " ".join(n for i, n in enumerate(AARCH64_HWCAP_NAMES) if hwcap >> i & 1)
    return (
        "processor\t: 0\n"
        "BogoMIPS\t: 125.00\n"
        f"Features\t: {features}\n"
        f"CPU implementer\t: {midr >> 24 & 0xFF:#04x}\n"
        f"CPU architecture: 8\n"
        f"CPU variant\t: {midr >> 20 & 0xF:#x}\n"
        f"CPU part\t: {midr >> 4 & 0xFFF:#05x}\n"
        f"CPU revision\t: {midr & 0xF}\n\n"
    )


def riscv64_cpuinfo(uc: Uc, hwcap: int, model_name: str) -> str:
    misa = uc.reg_read(UC_RISCV_REG_MISA)
    letters = "".join(c.lower() for c in "IMAFDQCV" if misa >> (ord(c) - ord("A")) & 1)
    return (
        "processor\t: 0\n"
        "hart\t\t: 0\n"
        f"isa\t\t: rv64{letters}\n"
        "mmu\t\t: sv39\n"
        f"uarch\t\t: qemuser,{model_name}\n\n"
    )


# ---- riscv64 counters --------------------------------------------------------------------

# Linux lets user mode read the `time` CSR (it sets scounteren.TM); unicorn has no time source
# and raises an illegal-instruction trap for it (shared/UNICORN-NOTES.md), so the trap handler
# emulates the read. The rate is the timebase of QEMU's virt board, which Linux reports there.
RISCV_TIMEBASE_HZ = 10_000_000
_CSR_TIME = 0xC01
_OPCODE_SYSTEM = 0x73
_FUNCT3_CSRRS = 2


def riscv_time_read_target(insn: int) -> int | None:
    """The destination register number when `insn` is `rdtime rd` (csrrs rd, time, x0)."""
    if (
        insn & 0x7F == _OPCODE_SYSTEM
        and insn >> 12 & 7 == _FUNCT3_CSRRS
        and insn >> 15 & 0x1F == 0  # rs1 = x0: a pure read
        and insn >> 20 == _CSR_TIME
    ):
        return insn >> 7 & 0x1F
    return None


def emulate_riscv_time_read(uc: Uc, insn_address: int) -> bool:
    """When the instruction at `insn_address` is `rdtime rd`, do what Linux lets it do: write
    the time in timebase ticks to rd. Returns False for any other instruction (a real SIGILL).

    Call from the illegal-instruction trap; unicorn has already moved pc past the instruction.
    """
    import time

    from unicorn.riscv_const import UC_RISCV_REG_X0

    try:
        insn = int.from_bytes(uc.mem_read(insn_address, 4), "little")
    except Exception:  # unreadable: not ours to explain
        return False
    rd = riscv_time_read_target(insn)
    if rd is None:
        return False
    if rd:
        ticks = time.monotonic_ns() * RISCV_TIMEBASE_HZ // 1_000_000_000
        uc.reg_write(UC_RISCV_REG_X0 + rd, ticks)
    return True


# ---- aarch64 at EL0 ----------------------------------------------------------------------

# Features unicorn's "max" core claims in its ID registers that qemuser does not give the
# guest, each shown as absent in the sanitised ID registers (and so in no hwcap). Measured on
# unicorn 2.1.4 (tests/guest/test_cpu_el0.py, test_sve.py):
# - BTI: ID_AA64PFR1_EL1.BT = 1, but a guarded page needs the GP bit of a stage-1 page-table
#   entry, and user mode has no guest page tables (unicorn's virtual TLB gives permissions
#   only): an indirect branch to a non-BTI instruction is never caught.
# - MTE: ID_AA64PFR1_EL1.MTE = 0 (not in the core); SME: ID_AA64PFR1_EL1.SME = 0 (not in the
#   core). Hidden anyway, so that a later core cannot claim them before qemuser manages tags
#   (PROT_MTE) or the streaming-mode state.
AARCH64_HIDDEN_FIELDS: tuple[tuple[SysReg, int], ...] = (
    (ID_AA64PFR1_EL1, 0),  # BT
    (ID_AA64PFR1_EL1, 8),  # MTE
    (ID_AA64PFR1_EL1, 24),  # SME
)


def emulate_aarch64_undefined(uc: Uc, pc: int) -> bool:
    """An undefined-instruction trap at `pc`, when it is what Linux answers without SIGILL:
    an MRS of a register it emulates for EL0 (qemuser.user.sysregs: the sanitised value goes
    to Xt, pc past it), or a task's first SVE instruction (sysregs.sve_first_use)."""
    from unicorn.arm64_const import UC_ARM64_REG_PC, UC_ARM64_REG_X0, UC_ARM64_REG_X29

    if pc % 4:
        return False  # a misaligned pc (SIGBUS, qemuser.user.misaligned)
    try:
        insn = int.from_bytes(uc.mem_read(pc, 4), "little")
    except Exception:  # noqa: BLE001 - unreadable: not ours to explain
        return False
    decoded = decode_mrs(insn)
    if decoded is None:
        return sve_first_use(uc, pc, insn)
    reg, rt = decoded
    value = user_value(uc, reg, AARCH64_HIDDEN_FIELDS)
    if value is None:
        return False
    if rt < 29:
        uc.reg_write(UC_ARM64_REG_X0 + rt, value)
    elif rt < 31:  # x29, x30 are numbered apart from x0-x28; 31 is xzr
        uc.reg_write(UC_ARM64_REG_X29 + rt - 29, value)
    # A pc written from the interrupt hook must be followed by a stop: the run loop starts
    # the engine again there. Without it, 3 runs in 16 of Debian's python3.11 crashed the
    # engine (SIGSEGV or abort in unicorn) after the two MRS glibc and OpenSSL make; with
    # it, 0 in 16 (exit checks off, qemuser.cpu.exit_checks).
    uc.reg_write(UC_ARM64_REG_PC, pc + 4)
    uc.emu_stop()
    return True


def prepare_aarch64(uc: Uc) -> None:
    """What the kernel sets up in the core at execve: pointer authentication with fresh
    keys (qemuser.user.pauth), then EL0 with the controls of a Linux task, and SVE, when the
    core has it, ready to be enabled at the first SVE instruction (qemuser.user.sysregs; its
    signal record: qemuser.syscalls.abi.sigframe; its prctl calls: qemuser.syscalls.proc)."""
    enable_pointer_auth(uc)
    enter_el0(uc, sve=_field(uc.cpr_read(*ID_AA64PFR0_EL1), 32) >= 1)  # type: ignore[attr-defined]


# arch/arm64/kernel/signal.c: signal_minsigstksz = the rt_sigframe + a 16-byte frame record +
# 16 bytes of alignment slack = 4720. The SVE record at a 16-byte vector length (576 bytes)
# fits in __reserved beside fpsimd and esr, so it adds nothing; there is no SME.
# Written as a number, not computed from the frame's layout: that would import the signal
# frame layouts at every start, for one constant (tests/unit/test_linux_facts.py checks it).
AARCH64_MINSIGSTKSZ = 4720

LINUX_ARCHES: dict[str, LinuxArch] = {
    # aarch64: 48-bit VA; ELF_ET_DYN_BASE = 2/3 of TASK_SIZE, as the kernel puts PIE binaries.
    "aarch64": LinuxArch(
        uname_machine="aarch64",
        platform=b"aarch64",
        task_size=1 << 48,
        has_hwcap2=True,
        stack_top=0x0000_FFFF_FFFF_0000,
        mmap_top=0x0000_FFFF_F000_0000,
        pie_base=0x0000_AAAA_AAAA_0000,
        interp_base_gap=0,
        minsigstksz=AARCH64_MINSIGSTKSZ,
        # arch/arm64/kernel/traps.c: BRK is SIGTRAP; unicorn numbers it EXCP_BKPT (7)
        trap_signals={7: (signal.SIGTRAP, TRAP_BRKPT)},
        trap_default=(signal.SIGILL, ILL_ILLOPC),
        pc_past_trap=0,
        emulated_traps={1: emulate_aarch64_undefined},
        alignment_trap=aarch64_alignment_trap,
        prepare_engine=prepare_aarch64,
        breakpoints=(),
        read_hwcaps=aarch64_hwcaps,
        syscall_discard_flag=SVE_MAYBE_ON,
        context_restored=sve_state_restored,
        syscall_discard=sve_discard,
        cpuinfo=aarch64_cpuinfo,
    ),
    # riscv64: Sv39, TASK_SIZE = 256 GiB.
    "riscv64": LinuxArch(
        uname_machine="riscv64",
        platform=None,
        task_size=1 << 38,
        has_hwcap2=False,
        stack_top=0x0000_003F_FFFF_F000,
        mmap_top=0x0000_003F_F000_0000,
        pie_base=0x0000_002A_AAAA_A000,
        interp_base_gap=0,
        minsigstksz=0,
        # arch/riscv/kernel/traps.c, by scause: 0/1 instruction misaligned/access fault are
        # SIGSEGV, 3 breakpoint is SIGTRAP, 2 illegal instruction is SIGILL unless it is the
        # rdtime the kernel lets user mode do. unicorn reports ebreak as an invalid
        # instruction with pc at it (c.ebreak 0x9002, ebreak 0x00100073).
        trap_signals={
            0: (signal.SIGSEGV, SEGV_MAPERR),
            1: (signal.SIGSEGV, SEGV_MAPERR),
            3: (signal.SIGTRAP, TRAP_BRKPT),
        },
        trap_default=(signal.SIGILL, ILL_ILLOPC),
        pc_past_trap=4,
        emulated_traps={2: emulate_riscv_time_read},
        alignment_trap=riscv64_alignment_trap,
        prepare_engine=lambda _uc: None,
        breakpoints=((2, 0x9002), (4, 0x0010_0073)),
        read_hwcaps=riscv64_hwcaps,
        syscall_discard_flag=[False],  # no state to discard
        syscall_discard=lambda _uc: None,
        context_restored=lambda: None,
        cpuinfo=riscv64_cpuinfo,
    ),
}
