"""The riscv64 platform: the hart's privileged machinery that unicorn leaves to us, the
built-in SBI, and the virt board's boot conventions, as a `CorePlatform`.

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
  than a trip through emulated firmware. A real OpenSBI still boots with `-bios fw_jump.elf`;
- boot as QEMU's virt does it: firmware at the start of RAM, the S-mode payload 2 MiB in, the
  DTB at the top of RAM, a boot ROM at 0x1000 (fw_dynamic's info), a0/a1 hart id and DTB.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from dataclasses import dataclass

from unicorn import UC_HOOK_INSN_INVALID, UC_PROT_EXEC, Uc, UcError
from unicorn import riscv_const as rv
from unicorn.unicorn_py3.unicorn import uclib

from qemuser.cpu import CPUS, CpuSpec
from qemuser.system.arch import rdtime
from qemuser.system.arch.common import SLICE, Boot, MachineHost, NewEngine, Vcpu
from qemuser.system.arch.regfile import RegisterFile
from qemuser.system.devices.base import FdtContext
from qemuser.system.devices.char.rx import SerialPort
from qemuser.system.devices.intc.clint import Clint
from qemuser.system.devices.intc.plic import Plic
from qemuser.system.errors import MachineError
from qemuser.system.fdt import Node
from qemuser.system.semihosting import Semihosting, UnsupportedCall
from qemuser.system.smp import Topology, add_cpu_map

M_MODE, S_MODE, U_MODE = 3, 1, 0
INTERRUPT = 1 << 63

# Interrupt numbers (mip/mie bits and mcause codes).
IRQ_S_SOFT, IRQ_M_SOFT, IRQ_S_TIMER, IRQ_M_TIMER, IRQ_S_EXT, IRQ_M_EXT = 1, 3, 5, 7, 9, 11
# Exception codes.
EXC_ILLEGAL, EXC_BREAKPOINT, EXC_ECALL_U = 2, 3, 8
EBREAK, C_EBREAK = 0x0010_0073, 0x9002
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


# SBI (RISC-V Supervisor Binary Interface spec v1.0): extension ids, and error codes for a0.
SBI_OK, SBI_ERR_FAILED, SBI_ERR_NOT_SUPPORTED, SBI_ERR_INVALID_PARAM = 0, -1, -2, -3
SBI_ERR_ALREADY_AVAILABLE = -6
EXT_BASE, EXT_TIME, EXT_IPI, EXT_RFENCE = 0x10, 0x54494D45, 0x735049, 0x52464E43
EXT_HSM, EXT_SRST, EXT_DBCN = 0x48534D, 0x53525354, 0x4442434E
LEGACY_SET_TIMER, LEGACY_PUTCHAR, LEGACY_GETCHAR = 0, 1, 2
LEGACY_CLEAR_IPI, LEGACY_SEND_IPI, LEGACY_SHUTDOWN = 3, 4, 8
SBI_SPEC_VERSION = (
    1 << 24
)  # v1.0, as OpenSBI 1.1 (QEMU 7.2's firmware); Linux needs 2.0 for earlycon=sbi
# Implementation ids are assigned by the SBI spec (0 BBL, 1 OpenSBI, ...); ours is not one of
# them, so a guest printing it shows an unknown implementation rather than a borrowed name.
SBI_IMPL_ID = 0x716D  # "qm"
SBI_IMPL_VERSION = 1


class SbiArgs:
    """a0-a5 of an SBI call, read when a handler asks for them (most calls use one or two)."""

    __slots__ = ("_regs",)

    def __init__(self, regs: RegisterFile) -> None:
        self._regs = regs

    def __getitem__(self, index: int) -> int:
        return self._regs.read(rv.UC_RISCV_REG_A0 + index)


@dataclass
class SbiResult:
    error: int = SBI_OK
    value: int = 0
    legacy: bool = False  # legacy calls return one value, in a0


class RiscvHart:
    """Hart 0 of the riscv virt board: traps, interrupts, rdtime and (optionally) the SBI."""

    def __init__(
        self,
        machine: MachineHost,
        clint: Clint | None,
        plic: Plic | None,
        console: SerialPort | None = None,
        index: int = 0,
    ) -> None:
        self.machine = machine
        self.index = index  # the hart id: a0 at entry, its CLINT words and PLIC contexts
        self.online = index == 0  # the others wait for SBI hart_start
        self.uc = machine.engines[index]
        self.regs = RegisterFile(self.uc)
        self.harts: list[RiscvHart] = [self]  # every hart of the machine (set by the platform)
        self.clint = clint
        self.plic = plic
        self.console = console
        self.builtin_sbi = False
        self.stimer_deadline: int | None = None  # SBI set_timer, in mtime ticks
        self._mip_driven = 0  # the mip bits we last wrote (SEIP, and STIP for the SBI)
        self._sbi: dict[int, Callable[[int, SbiArgs], SbiResult]] = {
            EXT_BASE: self._sbi_base,
            EXT_TIME: self._sbi_time,
            EXT_IPI: self._sbi_ipi,
            EXT_RFENCE: self._sbi_rfence,
            EXT_HSM: self._sbi_hsm,
            EXT_SRST: self._sbi_srst,
            EXT_DBCN: self._sbi_dbcn,
        }
        # unicorn stops at ebreak (UC_ERR_INSN_INVALID) instead of taking the breakpoint
        # exception; Linux's BUG()/WARN() and kprobes are ebreaks its trap handler expects.
        self.uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid_insn)
        self._insn_half = (ctypes.c_uint16 * 1)()
        self.semihosting: Semihosting | None = None  # -semihosting (set by cli/system.py)
        self._semihosting_resume: int | None = None  # pc after the call the hook answered
        # `time` read by the engine itself (rdtime.py); None: rdtime traps and _emulate answers.
        self._time_callback = rdtime.install(self.uc, self.mtime)

    def recover(self, error: Exception) -> bool:
        """unicorn ends emu_start with UC_ERR_EXCEPTION at a breakpoint exception. When the
        exception is delegated to S mode it has already entered the guest's handler (pc at
        stvec, scause 3): the run just goes on. Otherwise pc is still at the ebreak, and the
        hart takes the trap here."""
        pc = self.regs.read(rv.UC_RISCV_REG_PC)
        if self._semihosting_resume == pc:
            # the INSN_INVALID hook answered a semihosting call; unicorn stops all the same
            self._semihosting_resume = None
            return True
        priv = self.regs.read(rv.UC_RISCV_REG_PRIV)
        stvec = self._csr_read(rv.UC_RISCV_REG_STVEC) & ~3
        if priv == S_MODE and pc == stvec and self._csr_read(rv.UC_RISCV_REG_SCAUSE) == 3:
            return True
        insn = self._fetch_insn(pc)
        if insn is None or (insn != EBREAK and insn & 0xFFFF != C_EBREAK):
            return False
        if insn == EBREAK and self._semihosting_call(pc):
            return True
        self.take_trap(EXC_BREAKPOINT, pc, pc)
        return True

    def _on_invalid_insn(self, uc: Uc, _user: object) -> bool:
        """An instruction unicorn would stop at: ebreak becomes the guest's breakpoint trap."""
        pc = self.regs.read(rv.UC_RISCV_REG_PC)
        insn = self._fetch_insn(pc)
        if insn is None or (insn != EBREAK and insn & 0xFFFF != C_EBREAK):
            return False
        if insn == EBREAK and self._semihosting_call(pc):
            return True
        self.take_trap(EXC_BREAKPOINT, pc, pc)
        return True

    # slli x0,x0,0x1f / srai x0,x0,7: the words around the ebreak of a semihosting call
    _SEMIHOSTING_PRE, _SEMIHOSTING_POST = 0x01F01013, 0x40705013

    def _semihosting_call(self, pc: int) -> bool:
        """The semihosting sequence around an uncompressed ebreak (in U mode only with
        userspace=on, as QEMU's): op in a0,
        block in a1, result in a0, and the hart goes on after the ebreak (srai is a nop)."""
        if self.semihosting is None:
            return False
        if self.regs.read(rv.UC_RISCV_REG_PRIV) == U_MODE and not self.semihosting.config.userspace:
            return False
        if self._fetch_insn(pc - 4) != self._SEMIHOSTING_PRE:
            return False
        if self._fetch_insn(pc + 4) != self._SEMIHOSTING_POST:
            return False
        op, block = self.regs.read(rv.UC_RISCV_REG_A0), self.regs.read(rv.UC_RISCV_REG_A1)
        try:
            result = self.semihosting.call(self.uc, op, block)
        except UnsupportedCall as exc:
            self.machine.fault(str(exc))
            return True
        self.regs.write(rv.UC_RISCV_REG_A0, result)
        self.regs.write(rv.UC_RISCV_REG_PC, pc + 4)
        self._semihosting_resume = pc + 4
        return True

    # --- CSRs -------------------------------------------------------------------------------
    def _csr_read(self, reg: int) -> int:
        """Read a CSR whatever the current privilege (the API checks it, UNICORN-NOTES)."""
        priv = self.regs.read(rv.UC_RISCV_REG_PRIV)
        if priv == M_MODE:
            return self.regs.read(reg)
        self.regs.write(rv.UC_RISCV_REG_PRIV, M_MODE)
        value = self.regs.read(reg)
        self.regs.write(rv.UC_RISCV_REG_PRIV, priv)
        return value

    def _csr_write(self, reg: int, value: int) -> None:
        priv = self.regs.read(rv.UC_RISCV_REG_PRIV)
        if priv != M_MODE:
            self.regs.write(rv.UC_RISCV_REG_PRIV, M_MODE)
        self.regs.write(reg, value)
        if priv != M_MODE:
            self.regs.write(rv.UC_RISCV_REG_PRIV, priv)

    def mtime(self) -> int:
        return self.clint.mtime() if self.clint is not None else 0

    # --- boot -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Nothing beyond unicorn's own reset: the hart starts in M mode with PMP closed."""

    def boot(
        self,
        entry: int,
        dtb_addr: int,
        builtin_sbi: bool,
        info_addr: int = 0,
        stub_addr: int = 0,
        hartid: int = 0,
    ) -> None:
        """Registers at entry: a0 hart id, a1 the DTB, a2 fw_dynamic's info (firmware only).

        With the built-in SBI the guest starts in S mode, as OpenSBI would hand over to it, with
        the traps delegated the way OpenSBI delegates them. S mode may touch memory only through
        a PMP entry, and unicorn has no API for PMP CSRs: a three-instruction M-mode stub at
        `stub_addr` (the boot ROM) opens all memory and `mret`s to the entry.
        """
        uc = self.uc
        self.builtin_sbi = builtin_sbi
        self.regs.write(rv.UC_RISCV_REG_A0, hartid)
        self.regs.write(rv.UC_RISCV_REG_A1, dtb_addr)
        self.regs.write(rv.UC_RISCV_REG_A2, info_addr)
        self.regs.write(rv.UC_RISCV_REG_PRIV, M_MODE)
        if builtin_sbi:
            self.regs.write(rv.UC_RISCV_REG_MIDELEG, BUILTIN_MIDELEG)
            self.regs.write(rv.UC_RISCV_REG_MEDELEG, BUILTIN_MEDELEG)
            self.regs.write(rv.UC_RISCV_REG_MCOUNTEREN, 7)  # cycle, time, instret readable in S
            mstatus = self.regs.read(rv.UC_RISCV_REG_MSTATUS) & ~(3 << MPP_SHIFT)
            self.regs.write(rv.UC_RISCV_REG_MSTATUS, mstatus | FS_INITIAL | S_MODE << MPP_SHIFT)
            self.regs.write(rv.UC_RISCV_REG_MEPC, entry)
            self.regs.write(rv.UC_RISCV_REG_T0, (1 << 64) - 1)  # pmpaddr0: everything (NAPOT)
            self.regs.write(rv.UC_RISCV_REG_T1, PMP_NAPOT_RWX)
            uc.mem_write(stub_addr, b"".join(struct.pack("<I", i) for i in _PMP_OPEN_STUB))
            entry = stub_addr
        self.regs.write(rv.UC_RISCV_REG_PC, entry)

    # --- traps ------------------------------------------------------------------------------
    def on_exception(self, intno: int) -> None:
        """UC_HOOK_INTR: an exception unicorn did not vector (intno is the cause code)."""
        epc = self.regs.read(rv.UC_RISCV_REG_PC) - 4  # unicorn stepped pc 4 past every exception
        tval = 0
        if intno == EXC_ILLEGAL:
            insn = self._fetch_insn(epc)
            if insn is not None and self._emulate(insn, epc):
                return
            tval = insn or 0
        elif intno in ADDRESS_FAULTS:
            tval = self._fault_address()
        cause = intno
        if intno == EXC_ECALL_U:  # every ecall arrives as 8: the cause says from which mode
            priv = self.regs.read(rv.UC_RISCV_REG_PRIV)
            if priv == S_MODE and self.builtin_sbi:
                # The SBI: ecall from S mode is never delegated (the built-in firmware set
                # medeleg, and only M mode could change it), so take_trap would only come here.
                self._sbi_call()
                return
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
        priv = self.regs.read(rv.UC_RISCV_REG_PRIV)
        code = cause & 0x3F
        interrupt = bool(cause & INTERRUPT)
        self.regs.write(rv.UC_RISCV_REG_PRIV, M_MODE)  # CSR writes through the API obey privilege
        deleg = self.regs.read(rv.UC_RISCV_REG_MIDELEG if interrupt else rv.UC_RISCV_REG_MEDELEG)
        to_s = priv <= S_MODE and bool(deleg >> code & 1)
        if not to_s and self.builtin_sbi:
            # No M-mode code runs: the built-in firmware answers here, as OpenSBI would in M mode.
            self.regs.write(rv.UC_RISCV_REG_PRIV, priv)
            if cause == EXC_ECALL_U + S_MODE:
                self._sbi_call()
                return
            # OpenSBI hands anything else it does not emulate back to S mode (sbi_trap_redirect).
            to_s = priv <= S_MODE
            self.regs.write(rv.UC_RISCV_REG_PRIV, M_MODE)
        mstatus = self.regs.read(rv.UC_RISCV_REG_MSTATUS)
        if to_s:
            tvec = self.regs.read(rv.UC_RISCV_REG_STVEC)
            ie = mstatus >> 1 & 1
            mstatus = (mstatus & ~(SIE | SPIE | SPP)) | ie << 5 | (priv & 1) << 8
            self.regs.write(rv.UC_RISCV_REG_SEPC, epc)
            self.regs.write(rv.UC_RISCV_REG_SCAUSE, cause)
            self.regs.write(rv.UC_RISCV_REG_STVAL, tval)
        else:
            tvec = self.regs.read(rv.UC_RISCV_REG_MTVEC)
            ie = mstatus >> 3 & 1
            mstatus = (mstatus & ~(MIE | MPIE | 3 << MPP_SHIFT)) | ie << 7 | priv << MPP_SHIFT
            self.regs.write(rv.UC_RISCV_REG_MEPC, epc)
            self.regs.write(rv.UC_RISCV_REG_MCAUSE, cause)
            self.regs.write(rv.UC_RISCV_REG_MTVAL, tval)
        if tvec == 0:
            self.regs.write(rv.UC_RISCV_REG_PRIV, priv)
            mode = "stvec" if to_s else "mtvec"
            self.machine.fault(f"trap (cause {cause:#x}) with no {mode}")
            return
        self.regs.write(rv.UC_RISCV_REG_MSTATUS, mstatus)
        vectored = tvec & 3 == 1 and interrupt
        self.regs.write(rv.UC_RISCV_REG_PC, (tvec & ~3) + (4 * code if vectored else 0))
        self.regs.write(rv.UC_RISCV_REG_PRIV, S_MODE if to_s else M_MODE)

    def _emulate(self, insn: int, epc: int) -> bool:
        """Instructions the virt hart has and unicorn lacks: `csrr rd, time` (rdtime)."""
        # csrrs rd, time, x0: opcode SYSTEM, funct3 2, rs1 0, csr 0xC01.
        if insn & 0xFFFFF07F == (CSR_TIME << 20) | 2 << 12 | 0x73:
            rd = insn >> 7 & 31
            if rd:
                self.regs.write(rv.UC_RISCV_REG_X0 + rd, self.mtime())
            self.regs.write(rv.UC_RISCV_REG_PC, epc + 4)
            return True
        return False

    def _fetch_insn(self, vaddr: int) -> int | None:
        """The instruction word at a guest virtual address, read through the hart's own MMU at
        its current privilege (None when it cannot be read). One C call a halfword: a page walk
        in Python was ~35 µs of every rdtime trap before rdtime.py."""
        half = self._insn_half
        if uclib.uc_vmem_read(self.uc._uch, ctypes.c_uint64(vaddr), UC_PROT_EXEC, half, 2):
            return None
        low = half[0]
        if low & 3 != 3:
            return low  # a compressed instruction
        if uclib.uc_vmem_read(self.uc._uch, ctypes.c_uint64(vaddr + 2), UC_PROT_EXEC, half, 2):
            return None
        return low | half[0] << 16

    def in_wfi(self) -> bool:
        """Did the slice end on a `wfi` (the hart waits for an interrupt)? pc is virtual once
        S mode turns paging on, so the instruction is read through the page table."""
        pc = self.regs.read(rv.UC_RISCV_REG_PC)
        return self._fetch_insn(pc - 4) == WFI

    # --- interrupts -------------------------------------------------------------------------
    def slice_length(self) -> int:
        return SLICE

    def poll(self, woke: bool = False) -> None:
        """Between slices: drive SEIP (and the SBI's STIP), then take a due M-mode interrupt."""
        driven = 0
        if self.plic is not None and self.plic.context_pending(2 * self.index + Plic.S_CONTEXT):
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
        if self.plic is not None and self.plic.context_pending(2 * self.index + Plic.M_CONTEXT):
            pending |= 1 << IRQ_M_EXT
        if self.clint is not None:
            if self.clint.software_pending(self.index):
                pending |= 1 << IRQ_M_SOFT
            if self.clint.timer_pending(self.index):
                pending |= 1 << IRQ_M_TIMER
        if not pending:
            return
        priv = self.regs.read(rv.UC_RISCV_REG_PRIV)
        enabled = pending & self._csr_read(rv.UC_RISCV_REG_MIE)
        if not enabled:
            return
        if priv == M_MODE and not self._csr_read(rv.UC_RISCV_REG_MSTATUS) & MIE:
            return
        for irq in (IRQ_M_EXT, IRQ_M_SOFT, IRQ_M_TIMER):  # the spec's priority order
            if enabled >> irq & 1:
                self.take_trap(INTERRUPT | irq, self.regs.read(rv.UC_RISCV_REG_PC))
                return

    def ns_until_event(self, limit_ns: int) -> int:
        """Host nanoseconds until the next timer this hart waits for (CLINT or SBI)."""
        wait_ns = limit_ns
        if self.clint is not None:
            if not self.builtin_sbi:
                wait_ns = min(wait_ns, self.clint.ns_until_timer(self.index))
            if self.stimer_deadline is not None:
                ticks = self.stimer_deadline - self.clint.mtime()
                wait_ns = min(wait_ns, max(0, ticks * 1_000_000_000 // self.clint.freq_hz))
        return wait_ns

    # --- the built-in SBI -------------------------------------------------------------------
    def _sbi_call(self) -> None:
        """ecall from S mode: a7 extension, a6 function, a0-a5 arguments; a0/a1 results."""
        ext = self.regs.read(rv.UC_RISCV_REG_A7)
        fid = self.regs.read(rv.UC_RISCV_REG_A6)
        args = SbiArgs(self.regs)
        handler = self._sbi.get(ext)
        if handler is not None:
            result = handler(fid, args)
        elif ext <= LEGACY_SHUTDOWN:
            result = self._sbi_legacy(ext, args)
        else:
            result = SbiResult(SBI_ERR_NOT_SUPPORTED)
        self.regs.write(rv.UC_RISCV_REG_A0, result.error & (1 << 64) - 1)
        if not result.legacy:
            self.regs.write(rv.UC_RISCV_REG_A1, result.value & (1 << 64) - 1)
        # pc is already past the ecall (unicorn stepped it): the guest resumes after it.

    def _set_timer(self, deadline: int) -> None:
        self.stimer_deadline = deadline
        self.poll()  # drop STIP now: the guest expects it cleared when the call returns

    def _console_byte(self) -> int:
        """A byte typed on the console, or -1."""
        value = self.console.take_input() if self.console is not None else None
        return -1 if value is None else value

    def _sbi_legacy(self, ext: int, args: SbiArgs) -> SbiResult:
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

    def _sbi_base(self, fid: int, args: SbiArgs) -> SbiResult:
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

    def _sbi_time(self, fid: int, args: SbiArgs) -> SbiResult:
        if fid != 0:
            return SbiResult(SBI_ERR_NOT_SUPPORTED)
        self._set_timer(args[0])
        return SbiResult()

    def _set_ssip(self, pending: bool) -> None:
        mip = self._csr_read(rv.UC_RISCV_REG_MIP)
        bit = 1 << IRQ_S_SOFT
        self._csr_write(rv.UC_RISCV_REG_MIP, mip | bit if pending else mip & ~bit)

    def _targets(self, hart_mask: int, mask_base: int) -> list[RiscvHart] | None:
        """The harts an SBI hart mask names (base -1: all of them); None when one is not a
        hart of this machine."""
        if mask_base == (1 << 64) - 1:
            return list(self.harts)
        chosen = [mask_base + bit for bit in range(64) if hart_mask >> bit & 1]
        if any(hart >= len(self.harts) for hart in chosen):
            return None
        return [self.harts[hart] for hart in chosen]

    def _sbi_ipi(self, fid: int, args: SbiArgs) -> SbiResult:
        if fid != 0:
            return SbiResult(SBI_ERR_NOT_SUPPORTED)
        targets = self._targets(args[0], args[1])
        if targets is None:
            return SbiResult(SBI_ERR_INVALID_PARAM)
        for hart in targets:
            hart._set_ssip(True)
        if any(hart is not self for hart in targets):
            self.uc.emu_stop()  # end this hart's turn: the target runs soon (smp.py)
        return SbiResult()

    def _sbi_rfence(self, fid: int, args: SbiArgs) -> SbiResult:
        # The caller has fenced locally (unicorn flushes its own TLB at sfence.vma); the other
        # harts' engines flush before their next turn (smp.py Coherence). Every fence here is
        # a whole flush: address ranges and ASIDs only narrow what must go.
        if fid > 6:
            return SbiResult(SBI_ERR_NOT_SUPPORTED)
        if self._targets(args[0], args[1]) is None:
            return SbiResult(SBI_ERR_INVALID_PARAM)
        if len(self.harts) > 1:
            if fid == 0:  # remote fence.i
                self.machine.coherence.code_changed(self.index)
            else:  # sfence.vma (with or without ASID), and the hypervisor fences
                self.machine.coherence.tlb_invalidated(self.index)
        return SbiResult()

    def _sbi_hsm(self, fid: int, args: SbiArgs) -> SbiResult:
        hart = args[0]
        target = self.harts[hart] if fid in (0, 2) and hart < len(self.harts) else None
        if fid == 0:  # hart_start(hartid, start_addr, opaque)
            if target is None:
                return SbiResult(SBI_ERR_INVALID_PARAM)
            if target.online:
                return SbiResult(SBI_ERR_ALREADY_AVAILABLE)
            target.power_on(args[1], args[2])
            return SbiResult()
        if fid == 1:  # hart_stop: the last hart running cannot stop
            if sum(h.online for h in self.harts) == 1:
                return SbiResult(SBI_ERR_FAILED)
            self.online = False
            self.uc.emu_stop()
            return SbiResult()
        if fid == 2:  # hart_get_status: 0 STARTED, 1 STOPPED
            if target is None:
                return SbiResult(SBI_ERR_INVALID_PARAM)
            return SbiResult(value=0 if target.online else 1)
        if fid == 3:  # hart_suspend (retentive): behaves as wfi, which returns at once here
            return SbiResult()
        return SbiResult(SBI_ERR_NOT_SUPPORTED)

    # --- SMP ----------------------------------------------------------------------------------
    def pc(self) -> int:
        return self.regs.read(rv.UC_RISCV_REG_PC)

    def power_on(self, start_addr: int, opaque: int) -> None:
        """SBI hart_start: S mode at start_addr, a0 = hart id, a1 = opaque, paging and
        interrupts off; through the boot ROM's PMP stub as hart 0 (see `boot`)."""
        self.boot(start_addr, opaque, builtin_sbi=True, stub_addr=MROM, hartid=self.index)
        self._csr_write(rv.UC_RISCV_REG_SATP, 0)
        self._mip_driven = 0
        self.stimer_deadline = None
        self.uc.ctl_flush_tb()
        self.online = True

    def wakeup_pending(self) -> bool:
        """An interrupt that ends this hart's wfi: a pending, enabled one in mip (what the
        run loop drives into it), whatever mstatus says (wfi wakes regardless)."""
        self.poll()
        mip = self._csr_read(rv.UC_RISCV_REG_MIP)
        if self.clint is not None and not self.builtin_sbi:
            if self.clint.timer_pending(self.index):
                mip |= 1 << IRQ_M_TIMER
            if self.clint.software_pending(self.index):
                mip |= 1 << IRQ_M_SOFT
        return bool(mip & self._csr_read(rv.UC_RISCV_REG_MIE))

    def _sbi_srst(self, fid: int, args: SbiArgs) -> SbiResult:
        reset_type, reason = args[0] & 0xFFFF_FFFF, args[1] & 0xFFFF_FFFF
        if fid != 0 or reset_type > 2:
            return SbiResult(SBI_ERR_INVALID_PARAM if fid == 0 else SBI_ERR_NOT_SUPPORTED)
        if reset_type == 0:  # shutdown; reason 1 is "system failure"
            self.machine.power_off(1 if reason == 1 else 0)
        else:  # cold or warm reboot
            self.machine.reset()
        return SbiResult()

    def _sbi_dbcn(self, fid: int, args: SbiArgs) -> SbiResult:
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


# QEMU's riscv boot ROM (hw/riscv/boot.c) sits at 0x1000 and passes OpenSBI's fw_dynamic the next
# stage in a2 (include/sbi/fw_dynamic.h, struct fw_dynamic_info, version 2).
MROM, MROM_SIZE = 0x1000, 0xF000
FW_DYNAMIC_MAGIC, FW_DYNAMIC_VERSION, FW_DYNAMIC_NEXT_S = 0x4942534F, 2, 1
PAYLOAD_OFFSET = 0x20_0000  # with firmware in front, the S-mode payload goes 2 MiB in (fw_jump)


class Riscv64Platform:
    """The riscv64 virt board's CPU side: a hart behind the PLIC, timed by the CLINT, with the
    built-in SBI when no -bios is given."""

    # Class data, not a dataclass: one instance, and no generated methods to compile at start.
    cpu: CpuSpec = CPUS["riscv64"]
    uimage_arch = 26  # IH_ARCH_RISCV
    builtin_firmware = True
    dtb_in_ram_start_with_bios = False
    # Measured: without the checks, Debian's riscv64 kernel computes wrong results at random
    # (its blake2s and AES self-tests fail, a different test each boot); with them, none does.
    # The hart's hooks rewrite pc (rdtime emulation, traps) tens of thousands of times a second.
    skip_exit_checks = False

    def create_vcpu(self, machine: MachineHost, index: int, new_engine: NewEngine) -> Vcpu:
        plic, clint = machine.intc, machine.timer
        if not isinstance(plic, Plic) or not (clint is None or isinstance(clint, Clint)):
            raise ValueError("the riscv64 platform needs a PLIC and a CLINT")
        harts = len(machine.engines)
        plic.set_harts(harts)
        if clint is not None:
            clint.set_harts(harts)
        hart = RiscvHart(machine, clint, plic, machine.console_device, index)
        if index:
            first = machine.cpus[0]
            assert isinstance(first, RiscvHart)
            hart.harts = first.harts
            first.harts.append(hart)
        return hart

    def fdt_context(self) -> FdtContext:
        # Phandles as QEMU numbers them: cpu@0, its interrupt controller, the PLIC.
        return FdtContext(interrupt_parent=3, clock=0, gic=False, cpu_intc=2)

    def fdt_platform(
        self, root: Node, ctx: FdtContext, cpus: int, topology: Topology | None = None
    ) -> Node:
        node = root.child("cpus")
        node.props = {"#address-cells": 1, "#size-cells": 0, "timebase-frequency": 10_000_000}
        # Phandles as QEMU numbers them: the harts from the last down, each followed by its
        # interrupt controller, then the PLIC.
        phandles = [2 * (cpus - 1 - hart) + 1 for hart in range(cpus)]
        ctx.cpu_intcs = [phandle + 1 for phandle in phandles]
        ctx.cpu_intc = ctx.cpu_intcs[0]
        ctx.interrupt_parent = 2 * cpus + 1
        for hart, phandle in enumerate(phandles):
            cpu = node.child(
                f"cpu@{hart}",
                phandle=phandle,
                device_type="cpu",
                reg=hart,
                status="okay",
                compatible="riscv",
                riscv__isa="rv64imafdc",
                mmu_type="riscv,sv39",
            )
            cpu.child(
                "interrupt-controller",
                compatible="riscv,cpu-intc",
                interrupt_controller=None,
                phandle=phandle + 1,
                **{"#interrupt-cells": 1},
            )
        if cpus > 1:
            add_cpu_map(node, topology or Topology(cpus, cores=cpus, maxcpus=cpus), phandles, False)
        soc = root.child("soc", compatible="simple-bus", ranges=None)
        soc.props.update({"#address-cells": 2, "#size-cells": 2})
        return soc

    def map_boot_memory(self, machine: MachineHost) -> None:
        pass  # the boot ROM is mapped at start(), after the images

    def firmware_address(self, ram_base: int) -> int:
        return ram_base

    def kernel_address(self, ram_base: int, behind_firmware: bool) -> int:
        return ram_base + (PAYLOAD_OFFSET if behind_firmware else 0)

    def kernel_image(self, data: bytes, ram_base: int) -> tuple[int, int] | None:
        return None  # a riscv Image is loaded as a raw binary

    def start(self, vcpu: Vcpu, machine: MachineHost, boot: Boot) -> None:
        assert isinstance(vcpu, RiscvHart)
        uc = machine.uc
        if len(machine.engines) > 1:
            if not boot.builtin_firmware:
                # Every engine's hart reads mhartid 0 and unicorn cannot change it: firmware
                # that starts all harts from the boot ROM cannot tell them apart.
                raise MachineError("-smp with -bios: only the built-in SBI starts other harts")
            machine.shared.map(machine.engines, MROM, MROM_SIZE)
        else:
            uc.mem_map(MROM, MROM_SIZE)
        info = self._fw_dynamic_info(uc, boot.kernel_entry) if boot.bios else 0
        vcpu.boot(boot.entry, boot.dtb_addr, boot.builtin_firmware, info, stub_addr=MROM)

    @staticmethod
    def _fw_dynamic_info(uc: Uc, next_addr: int) -> int:
        """Write fw_dynamic_info (magic, version, next_addr, next_mode, options, boot_hart)."""
        addr = MROM + 0x40
        info = struct.pack(
            "<6Q", FW_DYNAMIC_MAGIC, FW_DYNAMIC_VERSION, next_addr, FW_DYNAMIC_NEXT_S, 0, 0
        )
        uc.mem_write(addr, info)
        return addr


RISCV64 = Riscv64Platform()
