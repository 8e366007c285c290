"""The aarch64 platform: the CPU's system level that unicorn leaves to us (exception entry,
IRQs, the timer) and the virt board's boot conventions, as a `CorePlatform`.

Unicorn never vectors an exception to the guest's table (it calls UC_HOOK_INTR instead), never
raises an IRQ, and drops writes to the generic timer's CTL/CVAL (UNICORN-NOTES, system level).
This module fills those gaps for one CPU running at EL1/EL0, or at EL2/EL1/EL0 with
`-M virt,virtualization=on`:

- exception entry as the CPU would do it: SP banking (SP_EL0 / SP_EL1 / SP_EL2), ELR, SPSR, the
  vector offset for the level it came from, and ESR/FAR taken from unicorn's own exception
  record (QEMU computes the full syndrome, WnR and fault status included, and the target EL
  from HCR_EL2, before it hands the exception to the hook; we read it out of the saved CPU
  context, see `SyndromeReader`). IRQs go to EL2 when HCR_EL2.IMO or TGE says so, else to EL1;
- EL2 (virtualization=on): unicorn's core has it (measured: PSTATE EL2h, the EL2 registers, the
  EL2 MMU, HVC and native ERET all work; CNTHP_* writes are dropped like the EL1 timers'). PSCI
  then comes over SMC (QEMU's conduit), HVC is the guest's own, the EL2 physical timer is
  emulated as PPI 26, and with E2H (VHE) the EL0 timer encodings reach the EL2 timers;
- the timer: MSR writes to CNTV_*/CNTP_* are caught by one raw UC_HOOK_INSN hook (MSR only: a
  hook on MRS would run for every `mrs sp_el0`, millions of times a boot) and mirrored into the
  CPU's own registers, so the guest's MRS reads (CTL, CVAL, TVAL) run natively;
- IRQ entry when the GIC has a pending interrupt and PSTATE.I allows it, checked between slices;
- boot as QEMU's virt does it: -bios runs from flash at 0 (with the DTB at the start of RAM),
  an arm64 `Image` goes at RAM + text_offset, x0 holds the DTB's address at entry.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable

from unicorn import UC_HOOK_INSN, UC_HOOK_INTR, UC_PROT_EXEC, Uc, UcError
from unicorn import arm64_const as a64
from unicorn.unicorn_py3.unicorn import uclib

from qemuser.cpu import CPUS, CpuSpec
from qemuser.system.arch.common import NEVER, Boot, MachineHost, NewEngine, Vcpu
from qemuser.system.devices.base import FdtContext
from qemuser.system.devices.firmware.psci import MPIDR_AFFINITY, Psci
from qemuser.system.devices.intc.gicv2 import GicV2
from qemuser.system.devices.intc.gicv3 import GicV3, is_icc
from qemuser.system.devices.timer.arm_generic import CTL, CTL_ISTATUS, CVAL, GenericTimer
from qemuser.system.fdt import Node
from qemuser.system.semihosting import GuestFault, Semihosting, UnsupportedCall, read_guest
from qemuser.system.smp import Topology, add_cpu_map, flush_tlb

MiB = 1 << 20
FLASH_SIZE = 64 * MiB  # virt: pflash bank 0 at address 0, where -bios runs
SHORT_SLICE = 1_000  # while an interrupt waits for the guest to unmask it
# Slices are sized by the next timer deadline, between these bounds.
SLICE_MIN, MAX_SLICE, NS_PER_INSN = 20_000, 2_000_000, 10

# Unicorn's intno for the exceptions it hands to UC_HOOK_INTR (QEMU's EXCP_* numbers).
EXCP_UDEF, EXCP_SWI, EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT, EXCP_BKPT = 1, 2, 3, 4, 7
EXCP_HVC, EXCP_HYP_TRAP, EXCP_SMC = 11, 12, 13
_ABORTS = (EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT)

# Vector table offsets (ARM ARM D1.10.2): the source of the exception, then its kind.
VEC_CURRENT_SP0, VEC_CURRENT_SPX, VEC_LOWER_A64 = 0x000, 0x200, 0x400
VEC_SYNC, VEC_IRQ = 0x000, 0x080

# PSTATE bits as unicorn's UC_ARM64_REG_PSTATE spells them (SPSR layout).
PSTATE_SP, PSTATE_I, PSTATE_PAN, PSTATE_SSBS = 1 << 0, 1 << 7, 1 << 22, 1 << 12
PSTATE_EL1H_MASKED = 0x3C5  # EL1 with SP_EL1, D A I F all masked
PSTATE_EL2H_MASKED = 0x3C9  # EL2 with SP_EL2, D A I F all masked
SCTLR_SPAN, SCTLR_DSSBS = 1 << 23, 1 << 44

# The generic timers' PPIs, as QEMU's virt board wires them (devices/timer/arm_generic.py);
# QEMU 7.2 leaves the EL2 virtual timer (FEAT_VHE's CNTHV_*) unwired, and so do we.
PPI_HYP_TIMER, PPI_VIRT_TIMER, PPI_PHYS_TIMER = 26, 27, 30

# System registers as (op0, op1, CRn, CRm, op2).
CNTVCT = (3, 3, 14, 0, 2)
SPSR_EL1, SPSR_EL2 = (3, 0, 4, 0, 0), (3, 4, 4, 0, 0)
SCTLR_EL1, SCTLR_EL2 = (3, 0, 1, 0, 0), (3, 4, 1, 0, 0)
ID_AA64MMFR1_EL1 = (3, 0, 0, 7, 1)
SCR_EL3, HCR_EL2, CPTR_EL3 = (3, 6, 1, 1, 0), (3, 4, 1, 1, 0), (3, 6, 1, 1, 2)
VMPIDR_EL2 = (3, 4, 0, 0, 5)
HCR_IMO, HCR_TSC, HCR_TGE, HCR_TDZ, HCR_E2H = 1 << 4, 1 << 19, 1 << 27, 1 << 28, 1 << 34
# The timer registers as (op1, CRm) of their MSR encoding: CNTV_*_EL0 (3, 3), CNTP_*_EL0
# (3, 2), CNTHP_*_EL2 (4, 2), and VHE's CNTP_*_EL02 / CNTV_*_EL02 (5, 2) / (5, 3), which reach
# the EL1 timers from EL2. With HCR_EL2.E2H set, EL2's CNTP_*_EL0 is CNTHP (ARM ARM D11.2.4).
_TIMER_ENCODING = {(3, 3): PPI_VIRT_TIMER, (3, 2): PPI_PHYS_TIMER, (4, 2): PPI_HYP_TIMER,
                   (5, 3): PPI_VIRT_TIMER, (5, 2): PPI_PHYS_TIMER}  # fmt: skip
# Where each timer's registers are (op0, op1, CRn, CRm), for mirroring CVAL and ISTATUS.
_TIMER_REGS = {PPI_VIRT_TIMER: (3, 3, 14, 3), PPI_PHYS_TIMER: (3, 3, 14, 2),
               PPI_HYP_TIMER: (3, 4, 14, 2)}  # fmt: skip
# Per target EL: its banked registers (SP, ELR, ESR, FAR, VBAR) and SPSR, SCTLR encodings.
_EL_REGS = {
    1: (a64.UC_ARM64_REG_SP_EL1, a64.UC_ARM64_REG_ELR_EL1, a64.UC_ARM64_REG_ESR_EL1,
        a64.UC_ARM64_REG_FAR_EL1, a64.UC_ARM64_REG_VBAR_EL1, SPSR_EL1, SCTLR_EL1),
    2: (a64.UC_ARM64_REG_SP_EL2, a64.UC_ARM64_REG_ELR_EL2, a64.UC_ARM64_REG_ESR_EL2,
        a64.UC_ARM64_REG_FAR_EL2, a64.UC_ARM64_REG_VBAR_EL2, SPSR_EL2, SCTLR_EL2),
}  # fmt: skip
_SP_BANK = {0: a64.UC_ARM64_REG_SP_EL0, 1: a64.UC_ARM64_REG_SP_EL1, 2: a64.UC_ARM64_REG_SP_EL2}


class CpReg(ctypes.Structure):
    """uc_arm64_cp_reg (unicorn/include/unicorn/arm64.h)."""

    _fields_ = (
        ("crn", ctypes.c_uint32),
        ("crm", ctypes.c_uint32),
        ("op0", ctypes.c_uint32),
        ("op1", ctypes.c_uint32),
        ("op2", ctypes.c_uint32),
        ("val", ctypes.c_uint64),
    )


# uc_cb_insn_sys_t: (uc, reg, const uc_arm64_cp_reg *, user_data) -> uint32 (1: skip the insn)
_SYS_HOOK = ctypes.CFUNCTYPE(
    ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p
)


class Registers:
    """Direct uc_reg_read/uc_reg_write: the binding's reg_read costs ~5 µs, these well under 1."""

    def __init__(self, uc: Uc) -> None:
        self._handle = uc._uch  # the engine handle the binding itself passes to C
        self._value = ctypes.c_uint64()
        self._value32 = ctypes.c_uint32()
        self._cp = CpReg()
        self._read = uclib.uc_reg_read
        self._write = uclib.uc_reg_write

    def read(self, reg: int) -> int:
        self._read(self._handle, reg, ctypes.byref(self._value))
        return self._value.value

    def write(self, reg: int, value: int) -> None:
        self._value.value = value
        self._write(self._handle, reg, ctypes.byref(self._value))

    def write_pstate(self, value: int) -> None:
        # unicorn takes PSTATE as 32 bits; it does not refresh its cached EL (a CP write does).
        self._value32.value = value
        self._write(self._handle, a64.UC_ARM64_REG_PSTATE, ctypes.byref(self._value32))

    def cp_read(self, reg: tuple[int, int, int, int, int]) -> int:
        cp = self._cp
        cp.op0, cp.op1, cp.crn, cp.crm, cp.op2 = reg
        self._read(self._handle, a64.UC_ARM64_REG_CP_REG, ctypes.byref(cp))
        return cp.val

    def cp_write(self, reg: tuple[int, int, int, int, int], value: int) -> None:
        cp = self._cp
        cp.op0, cp.op1, cp.crn, cp.crm, cp.op2 = reg
        cp.val = value
        self._write(self._handle, a64.UC_ARM64_REG_CP_REG, ctypes.byref(cp))


class SyndromeReader:
    """ESR and FAR of the exception unicorn is handing to UC_HOOK_INTR.

    QEMU fills `CPUARMState.exception` (syndrome, fsr, vaddress, target_el) before the exception
    reaches the hook, and uc_context_save copies CPUARMState. Where that struct sits in the
    context depends on the unicorn build, so it is found once per process by raising two known
    exceptions in a scratch engine: `svc #0x1234` (syndrome 0x56001234) and an unaligned
    exclusive load (data abort, vaddress = the address).
    """

    _offset: int | None = None
    _calibrated = False

    def __init__(self, uc: Uc, new_engine: Callable[[], Uc]) -> None:
        self.uc = uc
        self.context = uc.context_save()
        if not SyndromeReader._calibrated:
            SyndromeReader._offset = _find_exception_record(new_engine())
            SyndromeReader._calibrated = True

    @property
    def available(self) -> bool:
        return self._offset is not None

    def read(self) -> tuple[int, int, int]:
        """(syndrome, vaddress, target_el) of the exception in flight."""
        assert self._offset is not None
        self.uc.context_update(self.context)
        # struct { uint32_t syndrome, fsr; uint64_t vaddress; uint32_t target_el; }
        raw = ctypes.string_at(self.context.context.value + self._offset, 20)
        syndrome, _fsr, vaddress, target_el = struct.unpack("<IIQI", raw)
        return syndrome, vaddress, target_el


_PROBE_CODE = struct.pack(
    "<3I",
    0xD4024681,  # svc #0x1234
    0xC85F7C20,  # ldxr x0, [x1]  (x1 unaligned: alignment fault whatever SCTLR says)
    0xD503201F,  # nop
)
_PROBE_BASE = 0x4000_0000
_PROBE_SVC_SYNDROME = 0x5600_1234  # EC 0x15 (SVC64), IL, imm16
_PROBE_ADDR = 0x4000_0103


def _find_exception_record(uc: Uc) -> int | None:
    """Offset of CPUARMState.exception inside a saved context of a fresh engine, or None."""
    uc.mem_map(_PROBE_BASE, 0x1000)
    uc.mem_write(_PROBE_BASE, _PROBE_CODE)
    uc.reg_write(a64.UC_ARM64_REG_X1, _PROBE_ADDR)
    found: dict[str, int | None] = {"offset": None, "checked": None}

    def on_intr(uc: Uc, intno: int, _data: object) -> None:
        ctx = uc.context_save()
        raw = ctypes.string_at(ctx.context.value, ctx.size)
        pc = uc.reg_read(a64.UC_ARM64_REG_PC)
        if intno == EXCP_SWI:
            at = raw.find(struct.pack("<I", _PROBE_SVC_SYNDROME))
            found["offset"] = at if at >= 0 else None
            uc.reg_write(a64.UC_ARM64_REG_PC, pc)  # already after the svc
        else:
            offset = found["offset"]
            if intno == EXCP_DATA_ABORT and offset is not None:
                syndrome, _fsr, vaddress = struct.unpack_from("<IIQ", raw, offset)
                if syndrome >> 26 == 0x25 and vaddress == _PROBE_ADDR:
                    found["checked"] = offset
            uc.emu_stop()

    uc.hook_add(UC_HOOK_INTR, on_intr)
    try:
        uc.emu_start(_PROBE_BASE, _PROBE_BASE + len(_PROBE_CODE) - 4, count=3)
    except UcError:
        return None
    return found["checked"]


# ARMCPRegInfo (QEMU 5.0's target/arm/cpu.h, which unicorn 2.1.4 builds): the name pointer at
# 0, then uint8_t cp, crn, crm, opc0, opc1, opc2 at 8..13, and uint64_t resetvalue at 40.
_REGINFO_ENCODING, _REGINFO_RESETVALUE = 9, 40
_ID_AA64MMFR1_NAME = b"ID_AA64MMFR1_EL1\0"
_MMFR1_VH = 0xF << 8


def hide_vhe(regs: Registers) -> bool:
    """Make ID_AA64MMFR1_EL1.VH read 0 on this engine (and any other live one); True if done.

    Measured on unicorn 2.1.4 with -cpu max at EL2 and HCR_EL2.E2H=1: EL1 register encodings
    still reach the EL1 registers (no E2H redirection) and every *_EL12 alias is undefined, so
    a guest that takes VHE (Linux does when the ID register offers it) breaks on its first
    EL12 access. Without VH the same guests run nVHE, as on a Cortex-A72. The register is a
    constant of the core (ARM_CP_CONST: translated code embeds its reginfo's resetvalue,
    the API cannot write it), so its reginfo is found in the C heap, by its value, encoding
    and name, and patched; the caller flushes translated code. Nothing is written unless
    every check holds.
    """
    value = regs.cp_read(ID_AA64MMFR1_EL1)
    pattern = struct.pack("<Q", value)
    encoding = bytes((0, 7, 3, 0, 1))  # crn, crm, opc0, opc1, opc2 of ID_AA64MMFR1_EL1
    found = []
    with open("/proc/self/maps") as maps:
        heaps = [line.split()[0] for line in maps if line.rstrip().endswith("[heap]")]
    for span in heaps:
        low, high = (int(part, 16) for part in span.split("-"))
        raw = ctypes.string_at(low, high - low)
        at = raw.find(pattern)
        while at >= 0:
            start = at - _REGINFO_RESETVALUE
            if start >= 0 and raw[start + _REGINFO_ENCODING : start + 14] == encoding:
                (name,) = struct.unpack_from("<Q", raw, start)
                if low <= name < high - len(_ID_AA64MMFR1_NAME):  # its name lives there too
                    if raw[name - low : name - low + len(_ID_AA64MMFR1_NAME)] == _ID_AA64MMFR1_NAME:
                        found.append(low + at)
            at = raw.find(pattern, at + 1)
    for address in found:
        ctypes.memmove(address, struct.pack("<Q", value & ~_MMFR1_VH), 8)
    return not (regs.cp_read(ID_AA64MMFR1_EL1) & _MMFR1_VH)


class ArmCore:
    """The CPU of the aarch64 virt board, as far as unicorn does not model it."""

    def __init__(
        self,
        machine: MachineHost,
        new_engine: Callable[[], Uc],
        gic: GicV2 | None,
        psci: Psci | None,
        index: int = 0,
        el2: bool = False,
    ) -> None:
        self.machine = machine
        self.index = index  # the CPU number: GIC bank, MPIDR Aff0, DT cpu@N
        self.mpidr = index  # Aff0 only: QEMU's virt puts up to 8 GICv2 CPUs in one cluster
        self.online = index == 0  # the others wait for PSCI CPU_ON
        self.uc = uc = machine.engines[index]
        self.regs = Registers(uc)
        self.gic = gic
        self.psci = psci
        self.fault = machine.fault
        # virtualization=on: the CPU starts at EL2, the guest owns HCR_EL2 and HVC, and PSCI
        # comes over SMC.
        self.el2 = el2
        self.timers = {PPI_VIRT_TIMER: GenericTimer(), PPI_PHYS_TIMER: GenericTimer()}
        if el2:
            self.timers[PPI_HYP_TIMER] = GenericTimer()
        self.syndromes = SyndromeReader(uc, new_engine)
        self._wfi_word = (ctypes.c_uint32 * 1)()
        self._hooks: list[object] = []  # ctypes callbacks must live as long as the engine
        self.semihosting: Semihosting | None = None  # -semihosting (set by cli/system.py)
        self._add_msr_hook()
        if len(machine.engines) > 1:
            self._add_sys_hook()
        self.has_pan = bool((self.regs.cp_read(ID_AA64MMFR1_EL1) >> 20) & 0xF)
        if el2 and (self.regs.cp_read(ID_AA64MMFR1_EL1) >> 8) & 0xF:
            # -cpu max offers FEAT_VHE, which unicorn's core only half has (see hide_vhe).
            if not hide_vhe(self.regs):
                raise ValueError(
                    "virtualization=on: this CPU model has VHE, which qemuser's CPU core "
                    "cannot provide (use -cpu cortex-a72, cortex-a57 or cortex-a53)"
                )
            uc.ctl_flush_tb()
        self._reset_sctlr = self.regs.cp_read(SCTLR_EL1)
        self._reset_sctlr2 = self.regs.cp_read(SCTLR_EL2)

    def reset(self) -> None:
        # SCR_EL3 = NS | HCE | RW and HCR_EL2.RW: EL1 is AArch64 (48-bit tables) and HVC is
        # defined, which PSCI over HVC needs (UNICORN-NOTES, system level).
        # SCR_EL3.APK/API and HCR_EL2.APK/API: pointer-authentication keys are not trapped
        # (Debian's kernel programs them when -cpu max offers PAuth).
        # (With virtualization=on these are what a CPU without EL3 behaves as: QEMU's virt
        # has no EL3 unless secure=on.)
        self.regs.cp_write(SCR_EL3, 0x501 | 1 << 16 | 1 << 17)
        # CPTR_EL3.EZ: as firmware would, let EL1 reach SVE's ZCR_EL1 (-cpu max has SVE).
        self.regs.cp_write(CPTR_EL3, 1 << 8)
        if self.index:
            # Every engine is CPU 0 to unicorn (MPIDR_EL1 reads 0x80000000). EL1 reads
            # VMPIDR_EL2 instead while EL2 is enabled (SCR_EL3.NS), so that gives each its own.
            self.regs.cp_write(VMPIDR_EL2, 0x8000_0000 | self.mpidr)
        if self.el2:
            # EL2 is the guest's: HCR_EL2 at its reset value (0; firmware or Linux sets RW
            # before anything runs at EL1), the CPU at EL2h with everything masked.
            self.regs.cp_write(HCR_EL2, 0)
            self.regs.write_pstate(PSTATE_EL2H_MASKED)
            self.regs.cp_write(SPSR_EL2, 0)  # a CP write: unicorn takes the new EL
            return
        hcr = 1 << 31 | 1 << 40 | 1 << 41
        if len(self.machine.engines) > 1:
            # HCR_EL2.TDZ: DCZID_EL0 then says DC ZVA is prohibited, and Linux and glibc zero
            # memory with stores instead. Each DC ZVA would otherwise call the SYS hook that
            # SMP needs (one Python call per 64 bytes zeroed: measured 1.1 M calls, ~5% of an
            # arm64 -smp 4 boot).
            hcr |= HCR_TDZ
        self.regs.cp_write(HCR_EL2, hcr)

    # --- SMP ----------------------------------------------------------------------------------
    def pc(self) -> int:
        return self.regs.read(a64.UC_ARM64_REG_PC)

    def power_on(self, entry: int, context_id: int) -> None:
        """PSCI CPU_ON: interrupts masked, MMU and caches off, x0 = context_id, at the highest
        EL there is (QEMU's PSCI: EL2 with virtualization=on, else EL1)."""
        regs = self.regs
        regs.cp_write(SCTLR_EL1, self._reset_sctlr)
        regs.write(a64.UC_ARM64_REG_X0, context_id)
        if self.el2:
            regs.cp_write(SCTLR_EL2, self._reset_sctlr2)
            regs.write_pstate(PSTATE_EL2H_MASKED)
            regs.cp_write(SPSR_EL2, 0)  # a CP write: unicorn takes the new EL
        else:
            regs.write_pstate(PSTATE_EL1H_MASKED)
            regs.cp_write(SPSR_EL1, 0)  # a CP write: unicorn takes the new EL
        regs.write(a64.UC_ARM64_REG_PC, entry)
        flush_tlb(self.uc)
        self.uc.ctl_flush_tb()
        self.online = True

    def power_off(self) -> None:
        """PSCI CPU_OFF from this CPU: its turn ends, it is not run again until CPU_ON."""
        self.online = False
        self.uc.emu_stop()

    def wakeup_pending(self) -> bool:
        """Does an interrupt end this CPU's WFI? (A masked one does too: WFI wakes on it.)"""
        if self.gic is None:
            return False
        self.update_timers()
        return self.gic.pending_irq(self.index)

    def _add_insn_hook(self, instruction: int, handler: Callable[..., int]) -> None:
        """A raw UC_HOOK_INSN hook (MSR or SYS) on this vCPU's engine; the ctypes callback is
        kept alive with the vCPU."""
        callback = _SYS_HOOK(handler)
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            self.uc._uch,
            ctypes.byref(handle),
            UC_HOOK_INSN,
            callback,
            ctypes.c_void_p(0),
            ctypes.c_uint64(1),
            ctypes.c_uint64(0),
            ctypes.c_int(instruction),
        )
        if status:
            raise UcError(status)
        self._hooks.append(callback)

    def _add_sys_hook(self) -> None:
        """Broadcast maintenance (SYS instructions): TLBI and IC reach the other engines."""
        self._add_insn_hook(a64.UC_ARM64_INS_SYS, self._on_sys)

    def _on_sys(self, _handle: int, _reg: int, cp_addr: int, _data: int) -> int:
        try:
            cp = CpReg.from_address(cp_addr)
            if cp.crn == 8:  # TLBI (every form: a local one on another CPU costs a refill)
                self.machine.coherence.tlb_invalidated(self.index)
            elif cp.crn == 7 and (cp.crm, cp.op2) in ((1, 0), (5, 0), (5, 1)):
                # IC IALLUIS, IC IALLU, IC IVAU: code was written, other CPUs' translations of
                # it are stale.
                self.machine.coherence.code_changed(self.index)
        except Exception as exc:  # noqa: BLE001 - reported as a guest fault, never lost
            self.fault(f"internal error in SYS hook: {exc!r}")
        return 0  # the instruction still runs: this engine's own TLB and cache

    # --- the timer --------------------------------------------------------------------------
    def counter(self) -> int:
        """CNTVCT (= CNTPCT, no offset): unicorn's counter, which follows the host clock."""
        return self.regs.cp_read(CNTVCT)

    def _add_msr_hook(self) -> None:
        self._add_insn_hook(a64.UC_ARM64_INS_MSR, self._on_msr)

    def _on_msr(self, _handle: int, reg: int, cp_addr: int, _data: int) -> int:
        # A raw ctypes callback: an exception here would only be printed, so none may escape.
        try:
            cp = CpReg.from_address(cp_addr)
            if cp.op0 != 3 or cp.op1 != 3 and not self.el2:
                return 0
            if cp.op1 == 3 and cp.crn == 4 and cp.crm == 2 and cp.op2 == 1:
                # DAIF: does it unmask a pending IRQ?
                if not self.regs.read(reg) & PSTATE_I and self._irq_pending():
                    self.uc.emu_stop()
                return 0
            if cp.op1 == 4 and cp.crn == 0 and cp.crm == 0 and cp.op2 == 5:
                # VMPIDR_EL2: firmware and Linux copy MPIDR_EL1 into it at EL2, where every
                # engine reads 0x80000000 (unicorn's CPU 0); keep this CPU's own affinity.
                value = self.regs.read(reg) & ~MPIDR_AFFINITY | self.mpidr
                self.regs.cp_write(VMPIDR_EL2, value)
                return 1
            if cp.crn != 14 or cp.op2 > CVAL:
                return 0
            ppi = _TIMER_ENCODING.get((cp.op1, cp.crm))
            if ppi is None:
                return 0
            if self.el2 and cp.op1 == 3 and self._e2h_at_el2():
                if ppi != PPI_PHYS_TIMER:
                    return 0  # CNTHV_* (VHE's EL2 virtual timer): not wired, as in QEMU 7.2
                ppi = PPI_HYP_TIMER
            self.timer_write(ppi, cp.op2, self.regs.read(reg))
            return 1  # done here: unicorn would drop it
        except Exception as exc:  # noqa: BLE001 - reported as a guest fault, never lost
            self.fault(f"internal error in MSR hook: {exc!r}")
            return 0

    def timer_write(self, ppi: int, op2: int, value: int) -> None:
        """A guest write of TVAL, CTL or CVAL, kept here and mirrored into the CPU."""
        timer = self.timers[ppi]
        now = self.counter()
        timer.write(op2, value, now)
        self.regs.cp_write((*_TIMER_REGS[ppi], CVAL), timer.cval)
        self._sync_timer(ppi, timer, now)

    def _sync_timer(self, ppi: int, timer: GenericTimer, now: int) -> None:
        """Refresh ISTATUS in the CPU's CTL (the guest reads it natively) and the PPI line."""
        istatus = timer.condition(now)
        timer.istatus = istatus
        self.regs.cp_write((*_TIMER_REGS[ppi], CTL), timer.ctl | (CTL_ISTATUS if istatus else 0))
        if self.gic is not None:
            self.gic.set_ppi(self.index, ppi, timer.firing(now))

    def update_timers(self) -> None:
        now = self.counter()
        for ppi, timer in self.timers.items():
            if timer.firing(now) != (
                self.gic is not None and self.gic.line_high(self.index, ppi)
            ) or (timer.istatus != timer.condition(now)):
                self._sync_timer(ppi, timer, now)

    def _step_to_unmask(self, limit: int = 64) -> None:
        """Linux idles with IRQs masked and, once WFI returns, unmasks them a few instructions
        on (msr daifclr) before its idle loop masks them again and waits: even a short slice
        runs through that window. Step one instruction at a time to the unmask and take the
        pending IRQ there (seen: a virtio-blk completion, and `sleep 1`, never delivered)."""
        for _ in range(limit):
            try:
                self.uc.emu_start(self.regs.read(a64.UC_ARM64_REG_PC), NEVER, count=1)
            except UcError:
                return  # the main loop runs that instruction again and reports the error
            if self.machine.exit_status is not None:
                return
            if not self.irq_masked():
                self._take_irq()
                return

    def slice_length(self) -> int:
        """Instructions to run next: up to the next timer deadline (at an assumed ~100 M
        instructions/s), so a timer fires about on time without slicing finely when idle-free.
        An IRQ held off by PSTATE.I: Linux unmasks a few instructions after WFI (msr daifclr,
        which no hook sees), so look again soon."""
        if self.irq_masked():
            return SHORT_SLICE
        wait_ns = self.ns_until_event(MAX_SLICE * NS_PER_INSN)
        return max(SLICE_MIN, wait_ns // NS_PER_INSN)

    def ns_until_event(self, limit_ns: int) -> int:
        """Host nanoseconds until the next enabled, unmasked timer fires (at most limit_ns)."""
        now = self.counter()
        wait = limit_ns
        for timer in self.timers.values():
            wait = timer.ns_until(now, wait)
        return wait

    # --- interrupts -------------------------------------------------------------------------
    def _irq_pending(self) -> bool:
        return self.gic is not None and self.gic.pending_irq(self.index)

    def _e2h_at_el2(self) -> bool:
        """Running at EL2 with HCR_EL2.E2H (VHE: EL2 registers behind EL1/EL0 encodings)."""
        el = (self.regs.read(a64.UC_ARM64_REG_PSTATE) >> 2) & 3
        return el == 2 and bool(self.regs.cp_read(HCR_EL2) & HCR_E2H)

    def _irq_level(self, pstate: int) -> int:
        """The EL a physical IRQ would be taken to now, or 0 while it is held off: EL2 when
        HCR_EL2.IMO or TGE routes it there (then PSTATE.I masks it only at EL2 itself), else
        EL1 (never taken while at EL2). ARM ARM D1.13.2, without EL3."""
        el = (pstate >> 2) & 3
        if self.el2 and self.regs.cp_read(HCR_EL2) & (HCR_IMO | HCR_TGE):
            return 2 if el < 2 or not pstate & PSTATE_I else 0
        if el == 2 or pstate & PSTATE_I:
            return 0
        return 1

    def irq_masked(self) -> bool:
        """An IRQ is pending but held off (PSTATE.I, or running above the EL it goes to): the
        guest will unmask it soon."""
        if not self._irq_pending():
            return False
        pstate = self.regs.read(a64.UC_ARM64_REG_PSTATE)
        if not self.el2:
            return bool(pstate & PSTATE_I)
        return self._irq_level(pstate) == 0

    def poll(self, woke: bool = False) -> None:
        """Raise timer lines and take a pending IRQ if PSTATE.I allows it; after WFI, step
        through Linux's unmask window (see _step_to_unmask)."""
        self._take_irq()
        if woke and self.irq_masked():
            self._step_to_unmask()

    def _take_irq(self) -> None:
        if self.gic is None:
            return
        self.update_timers()
        if not self.gic.pending_irq(self.index):
            return
        pstate = self.regs.read(a64.UC_ARM64_REG_PSTATE)
        if not self.el2:
            if pstate & PSTATE_I:
                return
            self.enter(VEC_IRQ, self.regs.read(a64.UC_ARM64_REG_PC), None, None)
            return
        level = self._irq_level(pstate)
        if level:
            self.enter(VEC_IRQ, self.regs.read(a64.UC_ARM64_REG_PC), None, None, level)

    def recover(self, error: Exception) -> bool:
        return False  # every aarch64 trap reaches on_exception

    def in_wfi(self) -> bool:
        """Did the slice end because the guest executed WFI (pc just after it)?"""
        pc = self.regs.read(a64.UC_ARM64_REG_PC)
        status = uclib.uc_vmem_read(
            self.uc._uch, ctypes.c_uint64(pc - 4), UC_PROT_EXEC, self._wfi_word, 4
        )
        return status == 0 and self._wfi_word[0] == 0xD503207F

    # --- exceptions -------------------------------------------------------------------------
    def enter(self, kind: int, elr: int, esr: int | None, far: int | None, target: int = 1) -> bool:
        """Take an exception (kind VEC_SYNC or VEC_IRQ) to EL `target` (1, or 2 with
        virtualization=on); False if that EL has no vector table or is below the current one."""
        regs = self.regs
        sp_reg, elr_reg, esr_reg, far_reg, vbar_reg, spsr, sctlr_reg = _EL_REGS[target]
        pstate = regs.read(a64.UC_ARM64_REG_PSTATE)
        vbar = regs.read(vbar_reg)
        el = (pstate >> 2) & 3
        if el > target or vbar == 0:
            return False
        sp = regs.read(a64.UC_ARM64_REG_SP)
        if el < target:
            source = VEC_LOWER_A64
        else:
            source = VEC_CURRENT_SPX if pstate & PSTATE_SP else VEC_CURRENT_SP0
        bank = el if pstate & PSTATE_SP else 0  # the stack pointer running now
        if bank != target:
            # Bank it, and switch to the target's SP_ELx (unicorn keeps only the running SP).
            regs.write(_SP_BANK[bank], sp)
            sp = regs.read(sp_reg)
        sctlr = regs.cp_read(sctlr_reg)
        if target == 1:
            new_pstate = PSTATE_EL1H_MASKED
            pan_applies = True
        else:
            new_pstate = PSTATE_EL2H_MASKED
            # PAN exists at EL2 only in the EL2&0 regime (E2H and TGE).
            pan_applies = regs.cp_read(HCR_EL2) & (HCR_E2H | HCR_TGE) == HCR_E2H | HCR_TGE
        if self.has_pan and pan_applies and not sctlr & SCTLR_SPAN:
            new_pstate |= PSTATE_PAN
        if sctlr & SCTLR_DSSBS:
            new_pstate |= PSTATE_SSBS
        regs.write_pstate(new_pstate)
        regs.write(elr_reg, elr)
        if esr is not None:
            regs.write(esr_reg, esr)
        if far is not None:
            regs.write(far_reg, far)
        regs.cp_write(spsr, pstate)  # a CP write: also makes unicorn see the new EL
        regs.write(a64.UC_ARM64_REG_SP, sp)
        regs.write(a64.UC_ARM64_REG_PC, vbar + source + kind)
        return True

    # ESR for when the exception record could not be located (see SyndromeReader), and for a
    # trapped SMC (QEMU's record names EL3 for it).
    _EC_UNKNOWN, _EC_SVC64, _EC_SMC64, _ESR_IL = 0x00, 0x15, 0x17, 1 << 25

    def _psci(self) -> None:
        uc = self.uc
        x0 = uc.reg_read(a64.UC_ARM64_REG_X0)
        x1 = uc.reg_read(a64.UC_ARM64_REG_X1)
        x2 = uc.reg_read(a64.UC_ARM64_REG_X2)
        x3 = uc.reg_read(a64.UC_ARM64_REG_X3)
        assert self.psci is not None
        uc.reg_write(a64.UC_ARM64_REG_X0, self.psci.call(x0, x1, x2, x3, self.index))

    # General registers by MRS/MSR Rt field (31: XZR).
    _XREGS = tuple(getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(31))

    def _icc_access(self) -> bool:
        """A GICv3 ICC_* MRS/MSR at EL1 or above, which unicorn's core calls undefined:
        emulate it on the GIC and step over it (UNICORN-NOTES, system level); False if the
        undefined instruction is something else."""
        gic = self.gic
        if not isinstance(gic, GicV3):
            return False
        pc = self.regs.read(a64.UC_ARM64_REG_PC)
        word = self._wfi_word
        if uclib.uc_vmem_read(self.uc._uch, ctypes.c_uint64(pc), UC_PROT_EXEC, word, 4) != 0:
            return False
        insn = word[0]
        if insn & 0xFFD0_0000 != 0xD510_0000:  # MSR/MRS (register): 1101010100 L 1 ...
            return False
        op0, op1, crn = 2 + (insn >> 19 & 1), insn >> 16 & 7, insn >> 12 & 0xF
        crm, op2, rt = insn >> 8 & 0xF, insn >> 5 & 7, insn & 0x1F
        if not is_icc(op0, op1, crn, crm):
            return False
        if not (self.regs.read(a64.UC_ARM64_REG_PSTATE) >> 2) & 3:
            return False  # EL0: undefined there too (ICC_SRE_EL1.SRE without EL0 access)
        reg = (op0, op1, crn, crm, op2)
        if insn >> 21 & 1:  # MRS
            value = gic.sysreg_read(self.index, reg)
            if rt != 31:
                self.regs.write(self._XREGS[rt], value)
        else:
            gic.sysreg_write(self.index, reg, self.regs.read(self._XREGS[rt]) if rt != 31 else 0)
        self.regs.write(a64.UC_ARM64_REG_PC, pc + 4)
        return True

    def on_exception(self, intno: int) -> None:
        """UC_HOOK_INTR: a firmware call (PSCI), or an exception to take to EL1 (or EL2)."""
        uc = self.uc
        if intno == EXCP_UDEF and self._icc_access():
            return
        if intno == EXCP_UDEF and self.semihosting is not None and self._semihosting_call():
            return
        if self.el2:
            if self._el2_exception(intno):
                return
        elif intno in (EXCP_HVC, EXCP_SMC) and self.psci is not None:  # pc already after
            self._psci()
            return
        pc = self.regs.read(a64.UC_ARM64_REG_PC)
        target = 1
        # Preferred return address: SVC (like HVC/SMC) has pc after it, the others pc at it.
        if self.syndromes.available:
            esr, vaddress, target = self.syndromes.read()
            far = vaddress if intno in _ABORTS else None
        elif intno == EXCP_UDEF:
            esr, far = self._EC_UNKNOWN << 26 | self._ESR_IL, None
        elif intno == EXCP_SWI:
            insn = struct.unpack("<I", uc.mem_read(pc - 4, 4))[0]
            esr, far = self._EC_SVC64 << 26 | self._ESR_IL | (insn >> 5) & 0xFFFF, None
        else:
            self.fault(f"exception {intno}")
            return
        allowed = (EXCP_UDEF, EXCP_SWI, EXCP_BKPT, *_ABORTS)
        if self.el2:
            allowed += (EXCP_HVC, EXCP_HYP_TRAP)
        if intno not in allowed or target not in (1, 2) or target == 2 and not self.el2:
            self.fault(f"exception {intno} (ESR 0x{esr:x})")
            return
        if not self.enter(VEC_SYNC, pc, esr, far, target):
            self.fault(f"exception {intno} with no EL{target} vector table")

    _HLT_SEMIHOSTING = 0xD45E0000  # hlt #0xf000: unicorn makes it an undefined instruction

    def _semihosting_call(self) -> bool:
        """hlt #0xf000 (at EL0 only with userspace=on, as QEMU's): a semihosting call, op in x0,
        block in x1, result in x0; True when it was one."""
        assert self.semihosting is not None
        regs = self.regs
        pc = regs.read(a64.UC_ARM64_REG_PC)
        el0 = (regs.read(a64.UC_ARM64_REG_PSTATE) >> 2) & 3 == 0
        if el0 and not self.semihosting.config.userspace:
            return False
        try:
            if struct.unpack("<I", read_guest(self.uc, pc, 4))[0] != self._HLT_SEMIHOSTING:
                return False
        except GuestFault:
            return False
        op, block = regs.read(a64.UC_ARM64_REG_X0), regs.read(a64.UC_ARM64_REG_X1)
        try:
            result = self.semihosting.call(self.uc, op, block)
        except UnsupportedCall as exc:
            self.fault(str(exc))
            return True
        regs.write(a64.UC_ARM64_REG_X0, result)
        regs.write(a64.UC_ARM64_REG_PC, pc + 4)
        return True

    def _el2_exception(self, intno: int) -> bool:
        """virtualization=on: SMC is PSCI's conduit (unless HCR_EL2.TSC traps it from EL1 to
        EL2); True when handled here."""
        if intno != EXCP_SMC or self.psci is None:
            return False
        el = (self.regs.read(a64.UC_ARM64_REG_PSTATE) >> 2) & 3
        if el == 1 and self.regs.cp_read(HCR_EL2) & HCR_TSC:
            pc = self.regs.read(a64.UC_ARM64_REG_PC) - 4  # a trapped SMC returns to itself
            insn = struct.unpack("<I", self.uc.mem_read(pc, 4))[0]
            esr = self._EC_SMC64 << 26 | self._ESR_IL | (insn >> 5) & 0xFFFF
            if not self.enter(VEC_SYNC, pc, esr, None, 2):
                self.fault("SMC trapped to EL2 with no EL2 vector table")
            return True
        self._psci()
        return True


class Aarch64Platform:
    """The aarch64 virt board's CPU side: ArmCore vCPUs behind a GICv2, PSCI as firmware."""

    # Class data, not a dataclass: one instance, and no generated methods to compile at start.
    cpu: CpuSpec = CPUS["aarch64"]
    uimage_arch = 22  # IH_ARCH_ARM64
    builtin_firmware = False
    dtb_in_ram_start_with_bios = True  # U-Boot from flash finds it there (QEMU's virt)
    skip_exit_checks = True  # Linux boots and runs its self-tests clean without them

    def __init__(self, el2: bool = False, gic_v3: bool = False) -> None:
        self.el2 = el2  # -M virt,virtualization=on: the CPUs start at EL2
        self.gic_v3 = gic_v3  # -M virt,gic-version=3 (the timer's PPI flags name no CPUs)

    def create_vcpu(self, machine: MachineHost, index: int, new_engine: NewEngine) -> Vcpu:
        gic = machine.intc
        psci = machine.firmware
        if not isinstance(gic, GicV2) or not (psci is None or isinstance(psci, Psci)):
            raise ValueError("the aarch64 platform needs a GICv2 and PSCI")
        if index == 0:
            gic.set_cpus(len(machine.engines))
        core = ArmCore(machine, new_engine, gic, psci, index, el2=self.el2)
        if psci is not None:
            psci.cpus.append(core)
        return core

    def fdt_context(self) -> FdtContext:
        return FdtContext(interrupt_parent=1, clock=2, gic=True)

    def fdt_platform(
        self, root: Node, ctx: FdtContext, cpus: int, topology: Topology | None = None
    ) -> Node:
        root.set("interrupt-parent", ctx.interrupt_parent)  # the GIC, for every node
        node = root.child("cpus", **{"#address-cells": 1, "#size-cells": 0})
        phandles = [ctx.phandle() for _ in range(cpus)] if cpus > 1 else []
        if phandles:
            # QEMU's cpu-map: socket/cluster/core[/thread], from the -smp topology.
            add_cpu_map(node, topology or Topology(cpus, cores=cpus, maxcpus=cpus), phandles)
        for index in range(cpus):
            cpu = node.child(
                f"cpu@{index}",
                device_type="cpu",
                compatible="arm,cortex-a57",
                reg=index,
                enable_method="psci",
            )
            if phandles:
                cpu.set("phandle", phandles[index])
        # The PPIs' flags name the CPUs they reach (GIC binding: bits 15:8) with several.
        flags = 4 if cpus == 1 or self.gic_v3 else ((1 << cpus) - 1) << 8 | 4
        root.child(
            "apb-pclk",
            compatible="fixed-clock",
            **{"#clock-cells": 0},
            clock_frequency=24_000_000,
            clock_output_names="clk24mhz",
            phandle=ctx.clock,
        )
        root.child(
            "timer",
            compatible=["arm,armv8-timer", "arm,armv7-timer"],
            interrupts=[1, 13, flags, 1, 14, flags, 1, 11, flags, 1, 10, flags],
            always_on=None,
        )
        return root  # virt puts its devices at the root

    def map_boot_memory(self, machine: MachineHost) -> None:
        if len(machine.engines) > 1:
            machine.shared.map(machine.engines, 0, FLASH_SIZE)
        else:
            machine.uc.mem_map(0, FLASH_SIZE)

    def firmware_address(self, ram_base: int) -> int:
        return 0

    def kernel_address(self, ram_base: int, behind_firmware: bool) -> int:
        return ram_base

    def kernel_image(self, data: bytes, ram_base: int) -> tuple[int, int] | None:
        """An arm64 Image (Documentation/arch/arm64/booting.rst): text_offset at 8, and
        image_size at 16, which includes the BSS."""
        if data[0x38:0x3C] != b"ARM\x64":
            return None
        text_offset, image_size = struct.unpack_from("<QQ", data, 8)
        addr = ram_base + (text_offset or 0)
        return addr, addr + max(image_size, len(data))

    def start(self, vcpu: Vcpu, machine: MachineHost, boot: Boot) -> None:
        machine.uc.reg_write(a64.UC_ARM64_REG_X0, boot.dtb_addr)
        machine.uc.reg_write(self.cpu.pc, boot.entry)


AARCH64 = Aarch64Platform()
AARCH64_EL2 = Aarch64Platform(el2=True)
AARCH64_GICV3 = Aarch64Platform(gic_v3=True)
