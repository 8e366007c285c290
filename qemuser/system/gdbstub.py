"""The system-mode GDB stub: `-s` (= `-gdb tcp::1234`), `-S`, `-gdb tcp::N|tcp:HOST:N|unix:PATH`.

The protocol is qemuser.gdb's (GdbSession); this module is the machine's side of it.
`MachineTarget` is the machine as GDB sees it: the registers of the selected vCPU (each vCPU is
a thread, as in QEMU), aarch64's whole PSTATE as cpsr plus the EL1 system registers, riscv's
privilege level and S/M CSRs; memory at virtual addresses through the current MMU (an aarch64
stage-1 walk of TCR_EL1/TTBRn_EL1 with 4K/16K/64K granules, riscv's Sv39/48/57), or physical
ones after `maintenance packet Qqemu.PhyMemMode:1`; breakpoints and watchpoints.

`MachineDebugger` is what the run loop calls between slices (`before_slice`, `after_slice`):
there it reports GDB's connecting and its Ctrl-C as stops (SIGTRAP, SIGINT).
As in QEMU's system mode the machine does not wait for GDB: a host thread accepts the
connection, and the machine stops when GDB connects. With `-S` it is still in the monitor's
prelaunch state then: GDB is served from the accepting thread while the run loop waits, and
GDB's continue starts the machine as the monitor's `cont` would (QMP's query-status then says
running). Detaching (or GDB going away) lets the guest run on; kill ends the machine.

Breakpoints never touch guest memory: each is a unicorn code hook bounded to its (virtual)
address on every vCPU's engine; a single step is a code hook over every address, there until
the next instruction; watchpoints are memory hooks bounded to the watched bytes. These stops
are served *inside* the hook, where the state is exactly the instruction's (an engine stop
would land at the end of the block: the machine runs with unicorn's per-access exit checks
off, cpu/exit_checks.py). When GDB resumes, the instruction restarts (a pc write, exact with
the checks back on while GDB is attached) so that code translated again sees the hooks GDB
changed. With several vCPUs the checks stay off (their machine does not run with them, see
`_exact_on`): a resume there finishes the running block with the hooks it had.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NoReturn

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, Uc, UcError
from unicorn import arm64_const as a64
from unicorn import riscv_const as rv

from qemuser.cpu.debug import DebugFeature, DebugRegister, DebugView
from qemuser.cpu.exit_checks import ExitChecks
from qemuser.gdb.packets import GdbStubError
from qemuser.gdb.session import GdbSession, Resume
from qemuser.gdb.target import BREAKPOINT_KINDS
from qemuser.gdb.tdesc import TargetDescription
from qemuser.system.smp import flush_tlb

if TYPE_CHECKING:
    from qemuser.cpu.spec import CpuSpec
    from qemuser.system.machine import Machine

DEFAULT_PORT = 1234  # -s
_WATCH_ACCESS = {2: UC_HOOK_MEM_WRITE, 3: UC_HOOK_MEM_READ, 4: UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE}
_PAGE = 0x1000

Reader = Callable[[Uc], int]
Writer = Callable[[Uc, int], None]


class GdbDeviceError(ValueError):
    """A -gdb device QEMU would refuse: the message is QEMU's (without the option prefix)."""


# ---- -gdb DEV ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GdbDevice:
    family: str  # "tcp" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""


def parse_gdb_device(text: str) -> GdbDevice | None:
    """QEMU's -gdb value: a chardev (tcp:[HOST]:PORT, unix:PATH, with options such as
    server=on,wait=off, which a gdb stub always is), a bare port number, or `none` (None)."""
    if text == "none":
        return None
    if text.isdigit():
        text = f"tcp::{text}"
    head, _, _options = text.partition(",")
    kind, sep, rest = head.partition(":")
    if not sep or kind not in ("tcp", "unix"):
        raise GdbDeviceError(f"'{kind}' is not a valid char driver")
    if kind == "unix":
        if not rest:
            raise GdbDeviceError("Unable to parse FD number ")
        return GdbDevice("unix", path=rest)
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        raise GdbDeviceError("host and/or port not specified")
    try:
        port = int(port_text)
    except ValueError:
        raise GdbDeviceError(f"Failed to parse port '{port_text}'") from None
    if not 0 <= port <= 65535:
        raise GdbDeviceError(f"Failed to parse port '{port_text}'")
    return GdbDevice("tcp", host=host.strip("[]"), port=port)


def open_device(device: GdbDevice) -> GdbSession:
    """Listen on the device (GdbStubError with QEMU's words when that fails)."""
    if device.family == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(device.path)
            sock.listen(1)
        except OSError as exc:
            sock.close()
            raise GdbStubError(f"Failed to bind socket to {device.path}: {exc.strerror}") from None
        where = device.path
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((device.host or "0.0.0.0", device.port))
            sock.listen(1)
        except OSError as exc:
            sock.close()
            raise GdbStubError(f"Failed to bind socket: {exc.strerror}") from None
        where = f"tcp:{device.host}:{device.port}"
    sock.set_inheritable(False)
    return GdbSession(sock, where)


# ---- registers -----------------------------------------------------------------------------


class _CpRegs:
    """aarch64 system registers by (op0, op1, CRn, CRm, op2), through UC_ARM64_REG_CP_REG."""

    @staticmethod
    def read(uc: Uc, reg: tuple[int, int, int, int, int]) -> int:
        from qemuser.system.arch.aarch64 import Registers

        return Registers(uc).cp_read(reg)

    @staticmethod
    def write(uc: Uc, reg: tuple[int, int, int, int, int], value: int) -> None:
        from qemuser.system.arch.aarch64 import Registers

        Registers(uc).cp_write(reg, value)


# The EL1 registers GDB shows from QEMU's system-register feature (names as QEMU's).
_ARM_SYSREGS: tuple[tuple[str, tuple[int, int, int, int, int]], ...] = (
    ("SCTLR_EL1", (3, 0, 1, 0, 0)),
    ("TTBR0_EL1", (3, 0, 2, 0, 0)),
    ("TTBR1_EL1", (3, 0, 2, 0, 1)),
    ("TCR_EL1", (3, 0, 2, 0, 2)),
    ("MAIR_EL1", (3, 0, 10, 2, 0)),
    ("VBAR_EL1", (3, 0, 12, 0, 0)),
    ("ESR_EL1", (3, 0, 5, 2, 0)),
    ("FAR_EL1", (3, 0, 6, 0, 0)),
    ("ELR_EL1", (3, 0, 4, 0, 1)),
    ("SPSR_EL1", (3, 0, 4, 0, 0)),
)
SCTLR_EL1, TTBR0_EL1, TTBR1_EL1, TCR_EL1 = (reg for _, reg in _ARM_SYSREGS[:4])
_RISCV_CSRS = (
    ("sstatus", rv.UC_RISCV_REG_SSTATUS),
    ("sie", rv.UC_RISCV_REG_SIE),
    ("stvec", rv.UC_RISCV_REG_STVEC),
    ("sscratch", rv.UC_RISCV_REG_SSCRATCH),
    ("sepc", rv.UC_RISCV_REG_SEPC),
    ("scause", rv.UC_RISCV_REG_SCAUSE),
    ("stval", rv.UC_RISCV_REG_STVAL),
    ("sip", rv.UC_RISCV_REG_SIP),
    ("satp", rv.UC_RISCV_REG_SATP),
    ("mstatus", rv.UC_RISCV_REG_MSTATUS),
    ("misa", rv.UC_RISCV_REG_MISA),
    ("medeleg", rv.UC_RISCV_REG_MEDELEG),
    ("mideleg", rv.UC_RISCV_REG_MIDELEG),
    ("mie", rv.UC_RISCV_REG_MIE),
    ("mtvec", rv.UC_RISCV_REG_MTVEC),
    ("mscratch", rv.UC_RISCV_REG_MSCRATCH),
    ("mepc", rv.UC_RISCV_REG_MEPC),
    ("mcause", rv.UC_RISCV_REG_MCAUSE),
    ("mtval", rv.UC_RISCV_REG_MTVAL),
    ("mip", rv.UC_RISCV_REG_MIP),
    ("mhartid", rv.UC_RISCV_REG_MHARTID),
)
_M_MODE = 3


def _riscv_csr_read(reg: int) -> Reader:
    def read(uc: Uc) -> int:
        # unicorn checks the privilege of a CSR read made through its API (UNICORN-NOTES)
        priv = uc.reg_read(rv.UC_RISCV_REG_PRIV)
        if priv != _M_MODE:
            uc.reg_write(rv.UC_RISCV_REG_PRIV, _M_MODE)
        try:
            return uc.reg_read(reg)
        finally:
            if priv != _M_MODE:
                uc.reg_write(rv.UC_RISCV_REG_PRIV, priv)

    return read


def _riscv_csr_write(reg: int) -> Writer:
    def write(uc: Uc, value: int) -> None:
        priv = uc.reg_read(rv.UC_RISCV_REG_PRIV)
        if priv != _M_MODE:
            uc.reg_write(rv.UC_RISCV_REG_PRIV, _M_MODE)
        try:
            uc.reg_write(reg, value)
        finally:
            if priv != _M_MODE:
                uc.reg_write(rv.UC_RISCV_REG_PRIV, priv)

    return write


def _plain(reg: int) -> tuple[Reader, Writer]:
    return (lambda uc: uc.reg_read(reg)), (lambda uc, value: uc.reg_write(reg, value))


def _read_only(name: str) -> Writer:
    def write(_uc: Uc, _value: int) -> None:
        raise ValueError(f"{name} is read-only")

    return write


def _write_pstate(uc: Uc, value: int) -> None:
    from qemuser.system.arch.aarch64 import Registers

    regs = Registers(uc)
    regs.write_pstate(value)
    # unicorn takes a new EL from PSTATE only after a CP write (UNICORN-NOTES)
    regs.cp_write(SCTLR_EL1, regs.cp_read(SCTLR_EL1))


def system_registers(spec: CpuSpec) -> tuple[DebugView, list[tuple[Reader, Writer]]]:
    """The user-mode debug view of `spec` widened for system mode, and how to read and write
    each of its registers (system registers are not single unicorn registers)."""
    view = spec.debug_view()
    features: list[DebugFeature] = []
    access: list[tuple[Reader, Writer]] = []
    for feature in view.features:
        regs = []
        for reg in feature.registers:
            if spec.name == "aarch64" and reg.name == "cpsr":
                # user mode shows NZCV alone; a kernel's debugger wants the EL, SP and DAIF too
                reg = replace(reg, uc_reg=a64.UC_ARM64_REG_PSTATE, write_mask=None)
                access.append(((lambda uc: uc.reg_read(a64.UC_ARM64_REG_PSTATE)), _write_pstate))
            else:
                access.append(_plain(reg.uc_reg))
            regs.append(reg)
        features.append(replace(feature, registers=tuple(regs)))
    if spec.name == "aarch64":
        sys_regs = []
        for name, cp in _ARM_SYSREGS:
            sys_regs.append(DebugRegister(name, 64, -1, "uint64", "system"))
            access.append(
                (
                    lambda uc, cp=cp: _CpRegs.read(uc, cp),
                    lambda uc, value, cp=cp: _CpRegs.write(uc, cp, value),
                )
            )
        for name, reg in (("SP_EL0", a64.UC_ARM64_REG_SP_EL0), ("SP_EL1", a64.UC_ARM64_REG_SP_EL1)):
            sys_regs.append(DebugRegister(name, 64, reg, "uint64", "system"))
            access.append(_plain(reg))
        sys_regs.append(DebugRegister("CurrentEL", 64, -1, "uint64", "system"))
        access.append(
            (lambda uc: uc.reg_read(a64.UC_ARM64_REG_PSTATE) & 0xC, _read_only("CurrentEL"))
        )
        features.append(DebugFeature("org.qemu.gdb.arm.sys.regs", tuple(sys_regs)))
    elif spec.name == "riscv64":
        csrs = []
        for name, reg in _RISCV_CSRS:
            csrs.append(DebugRegister(name, 64, reg, "int", "system"))
            access.append((_riscv_csr_read(reg), _riscv_csr_write(reg)))
        features.append(DebugFeature("org.gnu.gdb.riscv.csr", tuple(csrs)))
        features.append(
            DebugFeature(
                "org.gnu.gdb.riscv.virtual",
                (DebugRegister("priv", 64, rv.UC_RISCV_REG_PRIV, "int", "system"),),
            )
        )
        access.append(_plain(rv.UC_RISCV_REG_PRIV))
    return DebugView(view.architecture, tuple(features)), access


class _SystemDescription(TargetDescription):
    """A TargetDescription over a view built here rather than the spec's own."""

    def __init__(self, view: DebugView) -> None:
        self.view = view
        self.osabi = None
        self.registers = view.registers


# ---- the MMU -------------------------------------------------------------------------------


def aarch64_translate(uc: Uc, vaddr: int) -> int | None:
    """The EL1&0 stage-1 walk of `vaddr` (Arm ARM D8, VMSAv8-64) with the MMU as the guest set
    it: None where nothing is mapped. With SCTLR_EL1.M clear, addresses are physical."""
    if not _CpRegs.read(uc, SCTLR_EL1) & 1:
        return vaddr
    tcr = _CpRegs.read(uc, TCR_EL1)
    upper = bool(vaddr >> 55 & 1)
    if upper:
        tsz, epd = tcr >> 16 & 0x3F, tcr >> 23 & 1
        granule = {1: 14, 2: 12, 3: 16}.get(tcr >> 30 & 3, 12)
        ttbr = _CpRegs.read(uc, TTBR1_EL1)
    else:
        tsz, epd = tcr & 0x3F, tcr >> 7 & 1
        granule = {0: 12, 1: 16, 2: 14}.get(tcr >> 14 & 3, 12)
        ttbr = _CpRegs.read(uc, TTBR0_EL1)
    if epd:
        return None
    tsz = max(tsz, 16)
    inputsize = 64 - tsz
    top = vaddr >> inputsize
    if top != (((1 << tsz) - 1) if upper else 0):
        return None  # outside the range this TTBR translates
    stride = granule - 3
    levels = -(-(inputsize - granule) // stride)
    level = 4 - levels
    table = ttbr & ((1 << 48) - 1) & ~1
    address_mask = ((1 << 48) - 1) & ~((1 << granule) - 1)
    while True:
        shift = granule + stride * (3 - level)
        index = vaddr >> shift & ((1 << min(stride, inputsize - shift)) - 1)
        try:
            desc = struct.unpack("<Q", uc.mem_read(table + 8 * index, 8))[0]
        except UcError:
            return None
        kind = desc & 3
        if kind == 3 and level < 3:  # a table
            table = desc & address_mask
            level += 1
            continue
        if (kind == 3 and level == 3) or (kind == 1 and level in (1, 2)):  # a page, a block
            out_mask = ((1 << 48) - 1) & ~((1 << shift) - 1)
            return (desc & out_mask) | (vaddr & ((1 << shift) - 1))
        return None


def riscv_translate(uc: Uc, vaddr: int) -> int | None:
    """Sv39/48/57 at the hart's current privilege (M mode and Bare: physical)."""
    priv = uc.reg_read(rv.UC_RISCV_REG_PRIV)
    satp = _riscv_csr_read(rv.UC_RISCV_REG_SATP)(uc)
    mode = satp >> 60
    if priv == _M_MODE or mode == 0:
        return vaddr
    levels = {8: 3, 9: 4, 10: 5}.get(mode)
    if levels is None:
        return None
    if vaddr >> (12 + 9 * levels - 1) not in (0, (1 << (64 - 12 - 9 * levels + 1)) - 1):
        return None  # not sign-extended: no such virtual address
    table = (satp & ((1 << 44) - 1)) << 12
    for level in range(levels - 1, -1, -1):
        index = vaddr >> (12 + 9 * level) & 0x1FF
        try:
            pte = struct.unpack("<Q", uc.mem_read(table + 8 * index, 8))[0]
        except UcError:
            return None
        if not pte & 1:
            return None
        ppn = pte >> 10 & ((1 << 44) - 1)
        if pte & 0xE:  # a leaf: superpages keep the low virtual bits
            offset_mask = (1 << (12 + 9 * level)) - 1
            return (ppn << 12 & ~offset_mask) | (vaddr & offset_mask)
        table = ppn << 12
    return None


# ---- the target ----------------------------------------------------------------------------


class _Killed(Exception):
    """GDB's kill: the machine ends (raised out of the session's serve loop)."""


class MachineTarget:
    """A machine as a qemuser.gdb.target.Target: its vCPUs are GDB's threads 1..N."""

    files = None

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        spec = machine.config.board.cpu
        self.spec = spec
        view, self._access = system_registers(spec)
        self.description = _SystemDescription(view)
        names = [reg.name for reg in view.registers]
        self._mhartid = names.index("mhartid") if "mhartid" in names else -1
        self._translate = aarch64_translate if spec.name == "aarch64" else riscv_translate
        self.physical = False  # Qqemu.PhyMemMode:1
        self.selected = 0  # the vCPU Hg chose (registers, memory through its MMU)
        self.stopped_cpu = 0  # the vCPU that stopped last (the stop reply's thread)
        self.breakpoints: dict[int, list[int]] = {}  # address -> a hook per engine
        self.watchpoints: dict[tuple[int, int, int], list[int]] = {}
        self.skip_at: int | None = None  # a breakpoint to pass once (resuming at it)
        self.hit_watch: tuple[int, int] | None = None  # (kind, address) of the stop GDB sees
        # The debugger's stop inside a hook (a breakpoint, a finished step, a watched access):
        # it serves GDB there and returns when GDB resumes the guest.
        self.stop_here: Callable[[Uc, str], None] | None = None
        self.in_hook = False
        self.restarting = False
        self.block_hook: tuple[Uc, int] | None = None
        self.step_hook: tuple[Uc, int] | None = None  # a code hook on every address, stepping
        self.step_from: int | None = None  # the step's own instruction (its call is passed)
        self._bp_fired: tuple[Uc, int] | None = None  # a breakpoint hook ran for this insn
        self.bp_before_step = False  # ... before the step hook stopped at it

    @property
    def engines(self) -> list[Uc]:
        return [vcpu.uc for vcpu in self.machine.cpus]  # type: ignore[attr-defined]

    @property
    def uc(self) -> Uc:
        return self.engines[self.selected]

    @property
    def pid(self) -> int:
        return 1  # QEMU's system mode: one process

    @property
    def thread_name(self) -> bytes:
        return self.thread_extra(self.selected + 1)

    # threads (optional Target methods the session looks for)

    def thread_ids(self) -> list[int]:
        return list(range(1, len(self.machine.cpus) + 1))

    def current_thread(self) -> int:
        return self.stopped_cpu + 1

    def select_thread(self, tid: int) -> bool:
        """Hg/Hc: -1 and 0 keep the current choice."""
        if tid in (-1, 0):
            return True
        if not 1 <= tid <= len(self.machine.cpus):
            return False
        self.selected = tid - 1
        return True

    def thread_extra(self, tid: int) -> bytes:
        vcpu = self.machine.cpus[tid - 1]
        halted = not getattr(vcpu, "online", True) or vcpu.in_wfi()
        state = "halted " if halted else "running"
        return f"CPU#{tid - 1} [{state}]".encode()

    # registers

    def read_registers(self) -> list[int]:
        return [self.read_register(n) for n in range(len(self.description.registers))]

    def read_register(self, number: int) -> int:
        if number == self._mhartid:
            return self.selected  # every engine is hart 0 to unicorn; hart N is vCPU N
        try:
            return self._access[number][0](self.uc)
        except UcError as exc:
            raise ValueError(str(exc)) from None

    def write_register(self, number: int, value: int) -> None:
        try:
            self._access[number][1](self.uc, value)
        except UcError as exc:
            raise ValueError(str(exc)) from None

    def set_pc(self, address: int) -> None:
        try:
            self.uc.reg_write(self.spec.pc, address)
        except UcError as exc:
            raise ValueError(str(exc)) from None

    # memory

    def set_physical_memory(self, physical: bool) -> None:
        self.physical = physical

    def _pieces(self, address: int, length: int) -> list[tuple[int, int]] | None:
        """(physical address, length) of each page the range crosses."""
        pieces = []
        end = address + length
        while address < end:
            chunk = min(end, (address | (_PAGE - 1)) + 1) - address
            phys = address if self.physical else self._walk(address)
            if phys is None:
                return None
            pieces.append((phys, chunk))
            address += chunk
        return pieces

    def _walk(self, vaddr: int) -> int | None:
        try:
            return self._translate(self.uc, vaddr)
        except UcError:
            return None

    def read_memory(self, address: int, length: int) -> bytes | None:
        pieces = self._pieces(address, length)
        if pieces is None:
            return None
        try:
            return b"".join(bytes(self.uc.mem_read(phys, size)) for phys, size in pieces)
        except UcError:
            return None

    def write_memory(self, address: int, data: bytes) -> bool:
        pieces = self._pieces(address, len(data))
        if pieces is None:
            return False
        at = 0
        try:
            for phys, size in pieces:
                self.uc.mem_write(phys, data[at : at + size])
                at += size
        except UcError:
            return False
        # code GDB patched must be translated again by every vCPU (not from inside a hook,
        # while a block runs: GDB's own writes there are data)
        if not self.in_hook:
            for engine in self.engines:
                engine.ctl_flush_tb()
        return True

    # breakpoints and watchpoints

    def insert_point(self, kind: int, address: int, length: int) -> bool:
        try:
            if kind in BREAKPOINT_KINDS:
                if address not in self.breakpoints:
                    self.breakpoints[address] = [
                        uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, None, address, address)
                        for uc in self.engines
                    ]
                return True
            key = (kind, address, length)
            if key not in self.watchpoints:
                last = address + max(length, 1) - 1
                self.watchpoints[key] = [
                    uc.hook_add(_WATCH_ACCESS[kind], self._on_watch, kind, address, last)
                    for uc in self.engines
                ]
                # code translated before has no memory-hook calls, and the TLB's fast path
                # skips them: both are dropped (also from inside a hook: the running block
                # goes on with its old code, later blocks are translated again)
                for uc in self.engines:
                    flush_tlb(uc)
                    uc.ctl_flush_tb()
            return True
        except UcError as exc:
            raise ValueError(str(exc)) from None

    def remove_point(self, kind: int, address: int, length: int) -> bool:
        if kind in BREAKPOINT_KINDS:
            hooks = self.breakpoints.pop(address, [])
        else:
            hooks = self.watchpoints.pop((kind, address, length), [])
        for uc, hook in zip(self.engines, hooks):
            try:
                uc.hook_del(hook)
            except UcError:
                pass
        return True

    def remove_all_points(self) -> None:
        for address in list(self.breakpoints):
            self.remove_point(0, address, 0)
        for kind, address, length in list(self.watchpoints):
            self.remove_point(kind, address, length)
        self.skip_at = None

    def watch_hit(self) -> tuple[int, int] | None:
        return self.hit_watch

    def arm_skip(self, uc: Uc) -> None:
        """Resuming between slices at a breakpoint: its instruction runs once, unstopped."""
        pc = uc.reg_read(self.spec.pc)
        self.skip_at = pc if pc in self.breakpoints else None

    def start_step(self, uc: Uc, step_from: int | None) -> None:
        """One instruction on `uc`: a code hook over every address stops at the next one."""
        if self.step_hook is None or self.step_hook[0] is not uc:
            self.end_step()
            self.step_hook = (uc, uc.hook_add(UC_HOOK_CODE, self._on_step, None, 1, 0))
        self.step_from = step_from

    def end_step(self) -> None:
        if self.step_hook is not None:
            uc, hook = self.step_hook
            self.step_hook = None
            try:
                uc.hook_del(hook)
            except UcError:
                pass
        self.step_from = None

    def restart(self, uc: Uc) -> None:
        """The instruction restarts: the hooks still to run for it in the old block are
        passed, until the new block starts (a block hook, there once)."""
        self.restarting = True
        if self.block_hook is None:
            self.block_hook = (uc, uc.hook_add(UC_HOOK_BLOCK, self._on_block, None, 1, 0))

    def _on_block(self, uc: Uc, _address: int, _size: int, _data: object) -> None:
        self.restarting = False
        if self.block_hook is not None:
            engine, hook = self.block_hook
            self.block_hook = None
            engine.hook_del(hook)

    def _on_breakpoint(self, uc: Uc, address: int, _size: int, _data: object) -> None:
        if self.stop_here is None or self.restarting:
            return
        if self.step_hook is not None:
            self._bp_fired = (uc, address)  # the step hook stops here, once
            return
        if self.skip_at == address:
            self.skip_at = None
            return
        self.skip_at = None
        self.stop_here(uc, "breakpoint")

    def _on_step(self, uc: Uc, address: int, _size: int, _data: object) -> None:
        if self.step_hook is None or self.step_hook[0] is not uc or self.stop_here is None:
            return
        if self.restarting:
            return
        self.bp_before_step = self._bp_fired == (uc, address)
        self._bp_fired = None
        if self.step_from == address:
            self.step_from = None  # the instruction being stepped
            return
        self.stop_here(uc, "step")

    def _on_watch(
        self, uc: Uc, access: int, address: int, size: int, _value: int, kind: object
    ) -> None:
        """A watched access, about to happen: the stop is before it (pc at the instruction,
        which GDB steps over with the watchpoints out, as aarch64 and riscv GDB expect)."""
        assert isinstance(kind, int)
        if self.hit_watch is not None or self.stop_here is None or self.restarting:
            return
        self.hit_watch = (kind, address)
        self.stop_here(uc, "watch")

    # the rest of the Target protocol

    def auxv(self) -> bytes | None:
        return None

    def exec_file(self) -> bytes | None:
        return None

    def kill(self) -> NoReturn:
        raise _Killed

    def reserve_fd(self, fd: int, reserved: bool) -> None:
        pass  # no guest file descriptors in system mode


# ---- the run loop's side -------------------------------------------------------------------


class RunState:
    """What the debugger needs of the monitor's session (system/session.py)."""

    run_state: str

    def resume(self) -> None: ...


class ManagedMachine(RunState):
    """The monitor's MachineSession as far as the stub wraps it."""

    machine: Machine
    _build: Callable[[], Machine]

    def run(self) -> int: ...


def stub_from_options(s_flag: bool, gdb: str | None) -> MachineDebugger | None:
    """-s / -gdb DEV: the stub, listening; None without either (or with -gdb none).
    GdbDeviceError with QEMU's one line ("-gdb DEV: why") when the device is bad."""
    if gdb is None and not s_flag:
        return None
    which = f"-gdb {gdb}" if gdb is not None else "-s"
    text = gdb if gdb is not None else f"tcp::{DEFAULT_PORT}"
    try:
        device = parse_gdb_device(text)
        if device is None:
            return None
        return MachineDebugger.open(device)
    except (GdbDeviceError, GdbStubError) as exc:
        raise GdbDeviceError(f"{which}: {exc}") from None


class MachineDebugger:
    """The GDB stub of one machine. Machine.run (and smp.run_smp) call `before_slice` before
    each engine run (it returns the instruction count: 0 skips a vCPU's turn while GDB steps
    another) and `after_slice` after it; the hooks call `_stop_in_hook`."""

    def __init__(self, session: GdbSession) -> None:
        self.session = session
        self.machine: Machine | None = None
        self.run_state: RunState | None = None
        self.target: MachineTarget | None = None
        self.step_cpu = 0  # the vCPU GDB steps (the others wait meanwhile)
        self._exact: list[AbstractContextManager[None]] = []
        self._attach_pending = threading.Event()  # GDB connected while the machine ran
        self._lock = threading.Lock()  # one thread serves GDB at a time
        self._thread: threading.Thread | None = None
        self.killed = False

    @classmethod
    def open(cls, device: GdbDevice) -> MachineDebugger:
        return cls(open_device(device))

    def attach(self, session: ManagedMachine) -> None:
        """Debug the session's machine and each machine a system_reset rebuilds for it."""
        previous_build = session._build  # noqa: SLF001 - wrap the session's own builder

        def build() -> Machine:
            machine = previous_build()
            machine.debugger = self
            return machine

        session._build = build  # noqa: SLF001
        session.machine.debugger = self
        run = session.run

        def run_and_report() -> int:
            status = 1
            try:
                status = run()
            finally:
                self.finish(status)
            return status

        session.run = run_and_report  # type: ignore[method-assign]
        self.start(session.machine, session)

    def finish(self, status: int) -> None:
        """The machine ended: W<status> tells GDB (QEMU's gdb_exit), and the stub closes."""
        # GDB may hold the accepting thread in a stopped machine that a monitor ended: do not
        # wait for it long
        locked = self._lock.acquire(timeout=1)
        try:
            listener = self.session.listener
            if listener is not None:
                try:
                    listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
                except OSError:
                    pass
            if not self.killed and self.session.connected:
                self.session.report_exit(status, None)
            self._detach()
            self.session._close_listener()  # noqa: SLF001 - nobody may connect any more
        finally:
            if locked:
                self._lock.release()

    def start(self, machine: Machine, run_state: RunState | None) -> None:
        """Listen for GDB on a host thread (the machine does not wait for it)."""
        self.machine = machine
        self.run_state = run_state
        self.target = MachineTarget(machine)
        self._thread = threading.Thread(target=self._accept, name="qemuser-gdb", daemon=True)
        self._thread.start()

    def rebind(self, machine: Machine) -> None:
        """A system_reset rebuilt the machine: GDB now debugs the new one."""
        with self._lock:
            old = self.target
            self.machine = machine
            self.target = MachineTarget(machine)
            if old is not None:
                old.remove_all_points()
                self.target.selected = old.selected
                self.target.physical = old.physical
            if self.session.connected:
                self.session.target = self.target
                self.target.stop_here = self._stop_in_hook
                self._exact_on()

    def _accept(self) -> None:
        assert self.target is not None and self.machine is not None
        try:
            self.session.accept(self.target)
        except GdbStubError:
            return
        with self._lock:
            self.target.stop_here = self._stop_in_hook
            state = self.run_state.run_state if self.run_state is not None else "running"
            if state == "running":
                # stop the machine; the run loop serves GDB at its next slice boundary (and
                # turns exact stops on there: their translation-cache flush may not happen
                # while the engine runs)
                self._attach_pending.set()
                self.machine.uc.emu_stop()
                return
            self._exact_on()
            # prelaunch (-S) or paused: the run loop waits in the monitor's checkpoint; GDB is
            # served from here, and its continue starts the machine.
            try:
                resume = self.session.serve()
            except _Killed:
                self._kill()
                return
            self._resume(resume, "between")
            if self.run_state is not None and not self.killed:
                self.run_state.resume()  # QEMU: GDB's continue (or detach) starts the machine

    def _exact_on(self) -> None:
        """Exact stops while GDB is attached to a one-vCPU machine, so that an instruction
        restarts right where GDB stopped it (the run turns unicorn's per-access exit checks
        off, cpu/exit_checks.py). Not with several vCPUs: their machine does not run with the
        checks on (measured: the smp fixture hangs), so there a resume from a stop inside a
        block finishes that block with the hooks it was translated with."""
        self._exact_off()
        engines = self.target.engines if self.target is not None else []
        if len(engines) != 1:
            return
        for uc in engines:
            context = ExitChecks(uc).exact_stops()
            context.__enter__()
            self._exact.append(context)

    def _exact_off(self) -> None:
        for context in self._exact:
            context.__exit__(None, None, None)
        self._exact.clear()

    # --- called by the run loop -------------------------------------------------------------

    def before_slice(self, machine: Machine, count: int) -> int:
        """Serve GDB if it connected or pressed Ctrl-C; the instruction count of the current
        vCPU's next run (0: skip its turn while GDB steps another vCPU)."""
        if machine is not self.machine:
            self.rebind(machine)
        if self._attach_pending.is_set():
            self._attach_pending.clear()
            with self._lock:
                self._exact_on()
            self._stop_between(signal.SIGTRAP, announce=False)
        if self.session.connected and self.session.interrupted.is_set():
            self._stop_between(signal.SIGINT)
        target = self.target
        if target is not None and target.step_hook is not None:
            return count if machine.current_cpu == self.step_cpu else 0
        return count

    def after_slice(self, machine: Machine) -> None:
        """Ctrl-C is reported as soon as the slice it came in ends (before an interrupt the
        run loop would take moves pc)."""
        if self.session.connected and self.session.interrupted.is_set():
            self._stop_between(signal.SIGINT)

    def _stop_between(self, signo: int, announce: bool = True) -> None:
        """A stop between two slices: the machine's state is whole. A GDB that has just
        connected is not sent a stop reply: it asks ('?') once it has set up."""
        assert self.target is not None and self.machine is not None
        with self._lock:
            if not self.session.connected:
                return
            self.target.stopped_cpu = self.target.selected = self.machine.current_cpu
            try:
                resume = self.session.report_stop(signo) if announce else self.session.serve()
            except _Killed:
                self._kill()
                return
            self._resume(resume, "between")

    def _stop_in_hook(self, uc: Uc, why: str) -> None:
        """A breakpoint, a finished step or a watched access, inside the engine's hook: GDB is
        served here; the instruction runs when GDB resumes (the hook returns)."""
        target, machine = self.target, self.machine
        assert target is not None and machine is not None
        with self._lock:
            if not self.session.connected:
                return
            target.stopped_cpu = target.selected = machine.current_cpu
            target.in_hook = True
            try:
                resume = self.session.report_stop(signal.SIGTRAP)
            except _Killed:
                self._kill()
                return
            finally:
                target.in_hook = False
                target.hit_watch = None
            self._resume(resume, why)
            if self.session.connected and self._exact:
                # Hooks GDB changed (a step, a watchpoint) are not in the running block's code:
                # restart the instruction (writing pc ends the block right here, exact stops
                # being on) from code translated again. Reads it repeats have no side effects
                # in RAM; a store it repeats stores the same value.
                for engine in target.engines:
                    engine.ctl_flush_tb()
                pc = uc.reg_read(target.spec.pc)
                uc.reg_write(target.spec.pc, pc)
                target.restart(uc)
                # the restarted instruction's hooks run again: neither a breakpoint nor the
                # step stops there once more
                if target.step_hook is not None:
                    target.step_from = pc
                elif pc in target.breakpoints:
                    target.skip_at = pc

    def _resume(self, resume: Resume | None, where: str) -> None:
        """GDB resumed the guest (a Resume) or detached / went away (None). `where` is where it
        stopped: "between" slices, or inside the hook of a "breakpoint", "step" or "watch"."""
        target = self.target
        assert target is not None
        self.session.interrupted.clear()
        if resume is None:  # the guest runs on undebugged
            self._detach()
            return
        self.step_cpu = target.selected
        uc = target.engines[self.step_cpu]
        pc = uc.reg_read(target.spec.pc)
        if resume.step:
            # the step's own instruction: its code hooks have run already, except when the
            # stop was between slices or at a breakpoint (the step hook may still see it)
            target.start_step(uc, pc if where in ("between", "breakpoint") else None)
            return
        target.end_step()
        if where == "between":
            target.arm_skip(uc)
        elif where == "step" and not target.bp_before_step and pc in target.breakpoints:
            target.skip_at = pc  # its breakpoint hook runs after the step hook's: not again
        self.session.start_watcher()

    def _detach(self) -> None:
        self.session.disconnect()
        if self.target is not None:
            self.target.remove_all_points()
            self.target.end_step()
            self.target.stop_here = None
        self._exact_off()

    def _kill(self) -> None:
        self.killed = True
        self._detach()
        if self.machine is not None:
            self.machine.stop(0)
