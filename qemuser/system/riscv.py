"""The riscv64 hart's privileged machinery that unicorn leaves to us, and the built-in SBI.

Unicorn delivers interrupts it can see in `mip` (SSIP/STIP/SEIP) natively, but never vectors an
exception (it calls UC_HOOK_INTR with pc already 4 past the faulting instruction), cannot raise
MTIP/MSIP/MEIP, and has no time source for `rdtime` (UNICORN-NOTES). This module fills those gaps:

- trap entry to M or S mode, honouring medeleg/mideleg, as the hart would;
- the machine-level interrupts from the CLINT and the PLIC's M context, and SEIP from the PLIC's
  S context, checked between slices;
- `rdtime` read from the CLINT's mtime, whatever the privilege (QEMU's virt hart has the `time`
  CSR);
- the default firmware. QEMU runs OpenSBI's fw_dynamic when no -bios is given. We give the S-mode
  guest the same SBI interface from Python instead: it needs no package on the host, and no M-mode
  firmware runs under emulation, so each SBI call (timer, console) costs one Python call rather
  than a trip through emulated firmware. A real OpenSBI still boots with `-bios fw_jump.elf`.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from unicorn import Uc, UcError
from unicorn import riscv_const as rv

from qemuser.system.devices import Clint, Ns16550, Plic

M_MODE, S_MODE, U_MODE = 3, 1, 0
INTERRUPT = 1 << 63

# Interrupt numbers (mip/mie bits and mcause codes).
IRQ_S_SOFT, IRQ_M_SOFT, IRQ_S_TIMER, IRQ_M_TIMER, IRQ_S_EXT, IRQ_M_EXT = 1, 3, 5, 7, 9, 11
# Exception codes.
EXC_ILLEGAL, EXC_ECALL_U = 2, 8
# Misaligned and access faults, page faults: stval/mtval gets the faulting address.
ADDRESS_FAULTS = frozenset({0, 1, 4, 5, 6, 7, 12, 13, 15})
_CONTEXT_SIZE, _BADADDR = 1568, 584

# mstatus bits (privileged spec, "Machine Status Register").
SIE, MIE, SPIE, MPIE, SPP = 1 << 1, 1 << 3, 1 << 5, 1 << 7, 1 << 8
MPP_SHIFT, FS_INITIAL = 11, 1 << 13

CSR_TIME = 0xC01
WFI = 0x10500073
PMP_NAPOT_RWX = 0x1F  # pmpcfg entry: R, W, X, address matching NAPOT
_PMP_OPEN_STUB = (
    0x3B029073,  # csrw pmpaddr0, t0
    0x3A031073,  # csrw pmpcfg0, t1
    0x30200073,  # mret (to mepc, in the mode mstatus.MPP names)
)

# What OpenSBI delegates to S mode (lib/sbi/sbi_hart.c, delegate_traps): the supervisor's own
# interrupts, and misaligned fetch, breakpoint, ecall from U and the three page faults.
BUILTIN_MIDELEG = 1 << IRQ_S_SOFT | 1 << IRQ_S_TIMER | 1 << IRQ_S_EXT
BUILTIN_MEDELEG = 1 << 0 | 1 << 3 | 1 << EXC_ECALL_U | 1 << 12 | 1 << 13 | 1 << 15


class RiscvMachine(Protocol):
    """What the hart needs of the machine around it."""

    uc: Uc

    def console_write(self, data: bytes) -> None: ...

    def power_off(self, status: int) -> None: ...

    def reset(self) -> None: ...

    def now_ns(self) -> int: ...

    def _fault(self, what: str) -> None: ...


# SBI (RISC-V Supervisor Binary Interface spec v1.0): extension ids, and error codes for a0.
SBI_OK, SBI_ERR_FAILED, SBI_ERR_NOT_SUPPORTED, SBI_ERR_INVALID_PARAM = 0, -1, -2, -3
SBI_ERR_ALREADY_AVAILABLE = -6
EXT_BASE, EXT_TIME, EXT_IPI, EXT_RFENCE = 0x10, 0x54494D45, 0x735049, 0x52464E43
EXT_HSM, EXT_SRST, EXT_DBCN = 0x48534D, 0x53525354, 0x4442434E
LEGACY_SET_TIMER, LEGACY_PUTCHAR, LEGACY_GETCHAR = 0, 1, 2
LEGACY_CLEAR_IPI, LEGACY_SEND_IPI, LEGACY_SHUTDOWN = 3, 4, 8
SBI_SPEC_VERSION = 1 << 24  # v1.0
# Implementation ids are assigned by the SBI spec (0 BBL, 1 OpenSBI, ...); ours is not one of
# them, so a guest printing it shows an unknown implementation rather than a borrowed name.
SBI_IMPL_ID = 0x716D  # "qm"
SBI_IMPL_VERSION = 1


@dataclass
class SbiResult:
    error: int = SBI_OK
    value: int = 0
    legacy: bool = False  # legacy calls return one value, in a0


class RiscvHart:
    """Hart 0 of the riscv virt board: traps, interrupts, rdtime and (optionally) the SBI."""

    def __init__(self, machine: RiscvMachine, clint: Clint | None, plic: Plic | None) -> None:
        self.machine = machine
        self.uc = machine.uc
        self.clint = clint
        self.plic = plic
        self.console: Ns16550 | None = None
        self.builtin_sbi = False
        self.stimer_deadline: int | None = None  # SBI set_timer, in mtime ticks
        self._mip_driven = 0  # the mip bits we last wrote (SEIP, and STIP for the SBI)
        self._sbi: dict[int, Callable[[int, list[int]], SbiResult]] = {
            EXT_BASE: self._sbi_base,
            EXT_TIME: self._sbi_time,
            EXT_IPI: self._sbi_ipi,
            EXT_RFENCE: self._sbi_rfence,
            EXT_HSM: self._sbi_hsm,
            EXT_SRST: self._sbi_srst,
            EXT_DBCN: self._sbi_dbcn,
        }

    # --- CSRs -------------------------------------------------------------------------------
    def _csr_read(self, reg: int) -> int:
        """Read a CSR whatever the current privilege (the API checks it, UNICORN-NOTES)."""
        priv = self.uc.reg_read(rv.UC_RISCV_REG_PRIV)
        if priv == M_MODE:
            return self.uc.reg_read(reg)
        self.uc.reg_write(rv.UC_RISCV_REG_PRIV, M_MODE)
        value = self.uc.reg_read(reg)
        self.uc.reg_write(rv.UC_RISCV_REG_PRIV, priv)
        return value

    def _csr_write(self, reg: int, value: int) -> None:
        priv = self.uc.reg_read(rv.UC_RISCV_REG_PRIV)
        if priv != M_MODE:
            self.uc.reg_write(rv.UC_RISCV_REG_PRIV, M_MODE)
        self.uc.reg_write(reg, value)
        if priv != M_MODE:
            self.uc.reg_write(rv.UC_RISCV_REG_PRIV, priv)

    def mtime(self) -> int:
        return self.clint.mtime() if self.clint is not None else 0

    # --- boot -------------------------------------------------------------------------------
    def reset(
        self, entry: int, dtb_addr: int, builtin_sbi: bool, info_addr: int = 0, stub_addr: int = 0
    ) -> None:
        """Registers at entry: a0 hart id, a1 the DTB, a2 fw_dynamic's info (firmware only).

        With the built-in SBI the guest starts in S mode, as OpenSBI would hand over to it, with
        the traps delegated the way OpenSBI delegates them. S mode may touch memory only through
        a PMP entry, and unicorn has no API for PMP CSRs: a three-instruction M-mode stub at
        `stub_addr` (the boot ROM) opens all memory and `mret`s to the entry.
        """
        uc = self.uc
        self.builtin_sbi = builtin_sbi
        uc.reg_write(rv.UC_RISCV_REG_A0, 0)
        uc.reg_write(rv.UC_RISCV_REG_A1, dtb_addr)
        uc.reg_write(rv.UC_RISCV_REG_A2, info_addr)
        uc.reg_write(rv.UC_RISCV_REG_PRIV, M_MODE)
        if builtin_sbi:
            uc.reg_write(rv.UC_RISCV_REG_MIDELEG, BUILTIN_MIDELEG)
            uc.reg_write(rv.UC_RISCV_REG_MEDELEG, BUILTIN_MEDELEG)
            uc.reg_write(rv.UC_RISCV_REG_MCOUNTEREN, 7)  # cycle, time, instret readable in S
            mstatus = uc.reg_read(rv.UC_RISCV_REG_MSTATUS) & ~(3 << MPP_SHIFT)
            uc.reg_write(rv.UC_RISCV_REG_MSTATUS, mstatus | FS_INITIAL | S_MODE << MPP_SHIFT)
            uc.reg_write(rv.UC_RISCV_REG_MEPC, entry)
            uc.reg_write(rv.UC_RISCV_REG_T0, (1 << 64) - 1)  # pmpaddr0: everything (NAPOT)
            uc.reg_write(rv.UC_RISCV_REG_T1, PMP_NAPOT_RWX)
            uc.mem_write(stub_addr, b"".join(struct.pack("<I", i) for i in _PMP_OPEN_STUB))
            entry = stub_addr
        uc.reg_write(rv.UC_RISCV_REG_PC, entry)

    # --- traps ------------------------------------------------------------------------------
    def on_exception(self, intno: int) -> None:
        """UC_HOOK_INTR: an exception unicorn did not vector (intno is the cause code)."""
        uc = self.uc
        epc = uc.reg_read(rv.UC_RISCV_REG_PC) - 4  # unicorn stepped pc 4 past every exception
        priv = uc.reg_read(rv.UC_RISCV_REG_PRIV)
        tval = 0
        if intno == EXC_ILLEGAL:
            insn = self._fetch_insn(epc, priv)
            if insn is not None and self._emulate(insn, epc):
                return
            tval = insn or 0
        elif intno in ADDRESS_FAULTS:
            tval = self._fault_address()
        cause = intno
        if intno == EXC_ECALL_U:  # every ecall arrives as 8: the cause says from which mode
            cause = EXC_ECALL_U + priv
        self.take_trap(cause, epc, tval)

    def _fault_address(self) -> int:
        """The faulting address of the exception being taken (QEMU's env->badaddr).

        Unicorn does not write stval/mtval and has no API for badaddr, but the field is in the
        bytes of a saved context. Its offset was measured for this unicorn build (2.1.4: a
        1568-byte riscv64 context, badaddr at 584) and is used only when the size matches;
        tests/system/test_riscv_hart.py checks it with real page faults.
        """
        context = self.uc.context_save()
        if context.size != _CONTEXT_SIZE:
            return 0
        return int.from_bytes(
            ctypes.string_at(context.context, context.size)[_BADADDR:][:8], "little"
        )

    def take_trap(self, cause: int, epc: int, tval: int = 0) -> None:
        """Enter the trap handler of M or S mode as the hart would."""
        uc = self.uc
        priv = uc.reg_read(rv.UC_RISCV_REG_PRIV)
        code = cause & 0x3F
        interrupt = bool(cause & INTERRUPT)
        uc.reg_write(rv.UC_RISCV_REG_PRIV, M_MODE)  # CSR writes through the API obey privilege
        deleg = uc.reg_read(rv.UC_RISCV_REG_MIDELEG if interrupt else rv.UC_RISCV_REG_MEDELEG)
        to_s = priv <= S_MODE and bool(deleg >> code & 1)
        if not to_s and self.builtin_sbi:
            # No M-mode code runs: the built-in firmware answers here, as OpenSBI would in M mode.
            uc.reg_write(rv.UC_RISCV_REG_PRIV, priv)
            if cause == EXC_ECALL_U + S_MODE:
                self._sbi_call()
                return
            # OpenSBI hands anything else it does not emulate back to S mode (sbi_trap_redirect).
            to_s = priv <= S_MODE
            uc.reg_write(rv.UC_RISCV_REG_PRIV, M_MODE)
        mstatus = uc.reg_read(rv.UC_RISCV_REG_MSTATUS)
        if to_s:
            tvec = uc.reg_read(rv.UC_RISCV_REG_STVEC)
            ie = mstatus >> 1 & 1
            mstatus = (mstatus & ~(SIE | SPIE | SPP)) | ie << 5 | (priv & 1) << 8
            uc.reg_write(rv.UC_RISCV_REG_SEPC, epc)
            uc.reg_write(rv.UC_RISCV_REG_SCAUSE, cause)
            uc.reg_write(rv.UC_RISCV_REG_STVAL, tval)
        else:
            tvec = uc.reg_read(rv.UC_RISCV_REG_MTVEC)
            ie = mstatus >> 3 & 1
            mstatus = (mstatus & ~(MIE | MPIE | 3 << MPP_SHIFT)) | ie << 7 | priv << MPP_SHIFT
            uc.reg_write(rv.UC_RISCV_REG_MEPC, epc)
            uc.reg_write(rv.UC_RISCV_REG_MCAUSE, cause)
            uc.reg_write(rv.UC_RISCV_REG_MTVAL, tval)
        if tvec == 0:
            uc.reg_write(rv.UC_RISCV_REG_PRIV, priv)
            mode = "stvec" if to_s else "mtvec"
            self.machine._fault(f"trap (cause {cause:#x}) with no {mode}")
            return
        uc.reg_write(rv.UC_RISCV_REG_MSTATUS, mstatus)
        vectored = tvec & 3 == 1 and interrupt
        uc.reg_write(rv.UC_RISCV_REG_PC, (tvec & ~3) + (4 * code if vectored else 0))
        uc.reg_write(rv.UC_RISCV_REG_PRIV, S_MODE if to_s else M_MODE)

    def _emulate(self, insn: int, epc: int) -> bool:
        """Instructions the virt hart has and unicorn lacks: `csrr rd, time` (rdtime)."""
        # csrrs rd, time, x0: opcode SYSTEM, funct3 2, rs1 0, csr 0xC01.
        if insn & 0xFFFFF07F == (CSR_TIME << 20) | 2 << 12 | 0x73:
            rd = insn >> 7 & 31
            if rd:
                self.uc.reg_write(rv.UC_RISCV_REG_X0 + rd, self.mtime())
            self.uc.reg_write(rv.UC_RISCV_REG_PC, epc + 4)
            return True
        return False

    def _fetch_insn(self, vaddr: int, priv: int) -> int | None:
        """The instruction word at a guest virtual address (None when it cannot be read)."""
        paddr = self.translate(vaddr, priv)
        if paddr is None:
            return None
        try:
            low = struct.unpack("<H", self.uc.mem_read(paddr, 2))[0]
            if low & 3 != 3:
                return low  # a compressed instruction
            high_addr = self.translate(vaddr + 2, priv)
            if high_addr is None:
                return None
            return low | struct.unpack("<H", self.uc.mem_read(high_addr, 2))[0] << 16
        except UcError:
            return None

    def translate(self, vaddr: int, priv: int) -> int | None:
        """Walk the Sv39/Sv48 page table for an instruction fetch at `priv` (privileged spec
        4.3.2); M mode and Bare translate to the same address."""
        satp = self._csr_read(rv.UC_RISCV_REG_SATP)
        mode = satp >> 60
        if priv == M_MODE or mode == 0:
            return vaddr
        levels = {8: 3, 9: 4}.get(mode)
        if levels is None:
            return None
        table = (satp & ((1 << 44) - 1)) << 12
        for level in range(levels - 1, -1, -1):
            index = vaddr >> (12 + 9 * level) & 0x1FF
            try:
                pte = struct.unpack("<Q", self.uc.mem_read(table + 8 * index, 8))[0]
            except UcError:
                return None
            if not pte & 1:
                return None
            ppn = pte >> 10 & ((1 << 44) - 1)
            if pte & 0xE:  # a leaf (R, W or X set): superpages keep the low virtual bits
                offset_mask = (1 << (12 + 9 * level)) - 1
                return (ppn << 12 & ~offset_mask) | (vaddr & offset_mask)
            table = ppn << 12
        return None

    def in_wfi(self) -> bool:
        """Did the slice end on a `wfi` (the hart waits for an interrupt)? pc is virtual once
        S mode turns paging on, so the instruction is read through the page table."""
        pc = self.uc.reg_read(rv.UC_RISCV_REG_PC)
        return self._fetch_insn(pc - 4, self.uc.reg_read(rv.UC_RISCV_REG_PRIV)) == WFI

    # --- interrupts -------------------------------------------------------------------------
    def poll(self) -> None:
        """Between slices: drive SEIP (and the SBI's STIP), then take a due M-mode interrupt."""
        uc = self.uc
        driven = 0
        if self.plic is not None and self.plic.context_pending(Plic.S_CONTEXT):
            driven |= 1 << IRQ_S_EXT
        if self.builtin_sbi and self.stimer_deadline is not None:
            if self.mtime() >= self.stimer_deadline:
                driven |= 1 << IRQ_S_TIMER
        mask = 1 << IRQ_S_EXT | (1 << IRQ_S_TIMER if self.builtin_sbi else 0)
        if driven != self._mip_driven:
            # unicorn raises SSIP/STIP/SEIP written to mip itself (natively, to stvec or mtvec).
            mip = self._csr_read(rv.UC_RISCV_REG_MIP)
            self._csr_write(rv.UC_RISCV_REG_MIP, (mip & ~mask) | driven)
            self._mip_driven = driven
        if self.builtin_sbi:
            return  # nothing enables machine interrupts: no M-mode code runs
        pending = 0
        if self.plic is not None and self.plic.context_pending(Plic.M_CONTEXT):
            pending |= 1 << IRQ_M_EXT
        if self.clint is not None:
            if self.clint.software_pending():
                pending |= 1 << IRQ_M_SOFT
            if self.clint.timer_pending():
                pending |= 1 << IRQ_M_TIMER
        if not pending:
            return
        priv = uc.reg_read(rv.UC_RISCV_REG_PRIV)
        enabled = pending & self._csr_read(rv.UC_RISCV_REG_MIE)
        if not enabled:
            return
        if priv == M_MODE and not self._csr_read(rv.UC_RISCV_REG_MSTATUS) & MIE:
            return
        for irq in (IRQ_M_EXT, IRQ_M_SOFT, IRQ_M_TIMER):  # the spec's priority order
            if enabled >> irq & 1:
                self.take_trap(INTERRUPT | irq, uc.reg_read(rv.UC_RISCV_REG_PC))
                return

    def ns_until_event(self) -> int:
        """Host nanoseconds until the next timer this hart waits for (CLINT or SBI)."""
        wait_ns = 10_000_000
        if self.clint is not None:
            if not self.builtin_sbi:
                wait_ns = min(wait_ns, self.clint.ns_until_timer())
            if self.stimer_deadline is not None:
                ticks = self.stimer_deadline - self.clint.mtime()
                wait_ns = min(wait_ns, max(0, ticks * 1_000_000_000 // self.clint.freq_hz))
        return wait_ns

    # --- the built-in SBI -------------------------------------------------------------------
    def _sbi_call(self) -> None:
        """ecall from S mode: a7 extension, a6 function, a0-a5 arguments; a0/a1 results."""
        uc = self.uc
        ext = uc.reg_read(rv.UC_RISCV_REG_A7)
        fid = uc.reg_read(rv.UC_RISCV_REG_A6)
        args = [uc.reg_read(rv.UC_RISCV_REG_A0 + i) for i in range(6)]
        handler = self._sbi.get(ext)
        if handler is not None:
            result = handler(fid, args)
        elif ext <= LEGACY_SHUTDOWN:
            result = self._sbi_legacy(ext, args)
        else:
            result = SbiResult(SBI_ERR_NOT_SUPPORTED)
        uc.reg_write(rv.UC_RISCV_REG_A0, result.error & (1 << 64) - 1)
        if not result.legacy:
            uc.reg_write(rv.UC_RISCV_REG_A1, result.value & (1 << 64) - 1)
        # pc is already past the ecall (unicorn stepped it): the guest resumes after it.

    def _set_timer(self, deadline: int) -> None:
        self.stimer_deadline = deadline
        self.poll()  # drop STIP now: the guest expects it cleared when the call returns

    def _console_byte(self) -> int:
        """A byte typed on the console, or -1."""
        value = self.console.take_input() if self.console is not None else None
        return -1 if value is None else value

    def _sbi_legacy(self, ext: int, args: list[int]) -> SbiResult:
        if ext == LEGACY_SET_TIMER:
            self._set_timer(args[0])
            return SbiResult(legacy=True)
        if ext == LEGACY_PUTCHAR:
            self.machine.console_write(bytes([args[0] & 0xFF]))
            return SbiResult(legacy=True)
        if ext == LEGACY_GETCHAR:
            return SbiResult(self._console_byte(), legacy=True)
        if ext == LEGACY_CLEAR_IPI:
            self._set_ssip(False)
            return SbiResult(legacy=True)
        if ext == LEGACY_SEND_IPI:
            self._set_ssip(True)
            return SbiResult(legacy=True)
        if ext == LEGACY_SHUTDOWN:
            self.machine.power_off(0)
            return SbiResult(legacy=True)
        return SbiResult(legacy=True)  # remote fences: one hart, nothing to do

    def _sbi_base(self, fid: int, args: list[int]) -> SbiResult:
        if fid == 0:
            return SbiResult(value=SBI_SPEC_VERSION)
        if fid == 1:
            return SbiResult(value=SBI_IMPL_ID)
        if fid == 2:
            return SbiResult(value=SBI_IMPL_VERSION)
        if fid == 3:  # probe_extension
            known = args[0] in self._sbi or args[0] <= LEGACY_SHUTDOWN
            return SbiResult(value=int(known))
        if fid in (4, 5, 6):  # mvendorid, marchid, mimpid: QEMU's hart reports zeros
            return SbiResult(value=0)
        return SbiResult(SBI_ERR_NOT_SUPPORTED)

    def _sbi_time(self, fid: int, args: list[int]) -> SbiResult:
        if fid != 0:
            return SbiResult(SBI_ERR_NOT_SUPPORTED)
        self._set_timer(args[0])
        return SbiResult()

    def _set_ssip(self, pending: bool) -> None:
        mip = self._csr_read(rv.UC_RISCV_REG_MIP)
        bit = 1 << IRQ_S_SOFT
        self._csr_write(rv.UC_RISCV_REG_MIP, mip | bit if pending else mip & ~bit)

    def _sbi_ipi(self, fid: int, args: list[int]) -> SbiResult:
        if fid != 0:
            return SbiResult(SBI_ERR_NOT_SUPPORTED)
        hart_mask, mask_base = args[0], args[1]
        if mask_base == (1 << 64) - 1 or (mask_base == 0 and hart_mask & 1):
            self._set_ssip(True)  # hart 0 is the only hart
        return SbiResult()

    def _sbi_rfence(self, fid: int, args: list[int]) -> SbiResult:
        # One hart, and the caller has fenced locally: unicorn's TLB is flushed by sfence.vma
        # itself. Nothing remote to do.
        return SbiResult() if fid <= 6 else SbiResult(SBI_ERR_NOT_SUPPORTED)

    def _sbi_hsm(self, fid: int, args: list[int]) -> SbiResult:
        hart = args[0]
        if fid == 0:  # hart_start
            return SbiResult(SBI_ERR_ALREADY_AVAILABLE if hart == 0 else SBI_ERR_INVALID_PARAM)
        if fid == 1:  # hart_stop: the last hart cannot stop
            return SbiResult(SBI_ERR_FAILED)
        if fid == 2:  # hart_get_status: 0 is STARTED
            return SbiResult() if hart == 0 else SbiResult(SBI_ERR_INVALID_PARAM)
        if fid == 3:  # hart_suspend (retentive): behaves as wfi, which returns at once here
            return SbiResult()
        return SbiResult(SBI_ERR_NOT_SUPPORTED)

    def _sbi_srst(self, fid: int, args: list[int]) -> SbiResult:
        reset_type, reason = args[0] & 0xFFFF_FFFF, args[1] & 0xFFFF_FFFF
        if fid != 0 or reset_type > 2:
            return SbiResult(SBI_ERR_INVALID_PARAM if fid == 0 else SBI_ERR_NOT_SUPPORTED)
        if reset_type == 0:  # shutdown; reason 1 is "system failure"
            self.machine.power_off(1 if reason == 1 else 0)
        else:  # cold or warm reboot
            self.machine.reset()
        return SbiResult()

    def _sbi_dbcn(self, fid: int, args: list[int]) -> SbiResult:
        if fid == 2:  # write_byte
            self.machine.console_write(bytes([args[0] & 0xFF]))
            return SbiResult()
        if fid not in (0, 1):
            return SbiResult(SBI_ERR_NOT_SUPPORTED)
        count, addr = args[0], args[1] | args[2] << 32
        try:
            if fid == 0:  # write: bytes from guest physical memory
                self.machine.console_write(bytes(self.uc.mem_read(addr, count)))
                return SbiResult(value=count)
            data = bytearray()
            while len(data) < count and (byte := self._console_byte()) >= 0:
                data.append(byte)
            self.uc.mem_write(addr, bytes(data))
            return SbiResult(value=len(data))
        except UcError:
            return SbiResult(SBI_ERR_INVALID_PARAM)
