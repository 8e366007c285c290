"""The CPU loop of the user-mode runtime: running the engine in slices, the interrupt hook
that takes system calls and traps, the dispatch of a call to its declaration, restarts after a
signal, and the signal Linux sends for each fault or trap (per-arch tables in
qemuser.user.linux, not branches here).

`CpuLoop` is a part of qemuser.user.process.Process (a mixin: it uses the process's state
through `self`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
from types import ModuleType

from unicorn import UC_HOOK_INTR, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, Uc, UcError
from unicorn.unicorn_const import UC_MEM_FETCH

from qemuser.loader.memory import STOP_ADDRESS, GuestFault, add_raw_hook
from qemuser.syscalls.argkinds import MASK64
from qemuser.syscalls.registry import SyscallDef
from qemuser.syscalls.sigstate import SA_RESTART, SIG_DFL, SIG_IGN, bit
from qemuser.user.linux import BUS_ADRALN, BUS_ADRERR, ILL_ILLOPC, TRAP_BRKPT
from qemuser.user.preempt import TICKER
from qemuser.user.runtime import ExitState, FatalSignal
from qemuser.user.threads import SLICE_INSTRUCTIONS

_INTERRUPT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)


def add_raw_interrupt_hook(uc: Uc, callback) -> object:
    """UC_HOOK_INTR as a raw ctypes hook (the syscall hot path: see add_raw_hook).

    The callback gets (engine handle, intno, user data) as C passes them, and must not raise.
    Returns the ctypes function object, which must be kept alive with the engine.
    """
    function = _INTERRUPT_CALLBACK(callback)
    add_raw_hook(uc, UC_HOOK_INTR, function)
    return function


def _strace() -> ModuleType:
    """qemuser.syscalls.strace, imported with the first line -strace prints: a run without
    -strace never needs it (nor its start-up cost)."""
    from qemuser.syscalls import strace

    return strace


def keeping_the_gil(function: ctypes._CFuncPtr) -> ctypes._CFuncPtr:
    """The same C function, called without the binding's argtypes (every argument given here
    is already a ctypes object or a small int) and without giving the GIL up around the call
    (ctypes' Python-API flag), for calls that take nanoseconds and never call back.

    Taken by address, so that it works wherever `function` comes from (the binding's CDLL, or
    the static binfmt interpreter's table of linked-in functions: qemuser.binfmt.boot).
    """
    address = ctypes.cast(function, ctypes.c_void_p).value
    return ctypes.PYFUNCTYPE(ctypes.c_int)(address)


class SyscallRegisters:
    """Reads a call's number and arguments in one C call, and writes its result.

    unicorn's Python reg_read costs ~5 µs a register (class lookups per call); a prepared
    uc_reg_read_batch over the same seven registers costs well under 1 µs. The C functions
    are taken without the binding's argtypes: every argument here is already a ctypes object
    or a small int, and ctypes' per-argument conversion doubled the cost of each call. They
    also keep the GIL (keeping_the_gil): a register copy takes nanoseconds, and giving the GIL
    up and taking it back around it cost ~1,400 host instructions a system call (callgrind).
    """

    def __init__(self, uc: Uc, number: int, args: tuple[int, ...], ret: int) -> None:
        from unicorn.unicorn_py3.unicorn import uclib

        self._lib = uclib
        self._handle = uc._uch  # the engine handle the binding itself passes to C
        regs = (number, *args)
        self._count = len(regs)
        self._ids = (ctypes.c_int32 * self._count)(*regs)
        self._values = (ctypes.c_uint64 * self._count)()
        self._pointers = (ctypes.c_void_p * self._count)(
            *(ctypes.addressof(self._values) + 8 * i for i in range(self._count))
        )
        self._ret_id = ret
        self._ret_value = ctypes.c_uint64()
        self._ret_pointer = ctypes.byref(self._ret_value)
        self._read_batch = keeping_the_gil(uclib["uc_reg_read_batch"])
        self._write = keeping_the_gil(uclib["uc_reg_write"])
        self._unpack = struct.Struct(f"<{self._count}Q").unpack_from

    def read(self) -> tuple[int, ...]:
        """(number, arg0, ..., arg5)."""
        self._read_batch(self._handle, self._ids, self._pointers, self._count)
        return self._unpack(self._values)

    def write_result(self, value: int) -> None:
        self._ret_value.value = value
        self._write(self._handle, self._ret_id, self._ret_pointer)


class RegisterReader:
    """One register read in one C call (the run loop reads pc after every slice: ~5 µs
    through the binding's reg_read, well under 1 µs here; see SyscallRegisters)."""

    def __init__(self, uc: Uc, register: int) -> None:
        from unicorn.unicorn_py3.unicorn import uclib

        self._read = keeping_the_gil(uclib["uc_reg_read"])
        self._handle = uc._uch
        self._register = register
        self._value = ctypes.c_uint64()
        self._pointer = ctypes.byref(self._value)

    def read(self) -> int:
        self._read(self._handle, self._register, self._pointer)
        return self._value.value


class CpuLoop:
    """The running half of a Process (see the module's doc)."""

    def run(self) -> ExitState:
        """Run until the guest exits or dies."""
        pc = self.entry
        uc = self.uc
        read_pc = RegisterReader(uc, self.spec.pc).read
        if self.debugger is not None:
            self.debugger.attach(self)  # GDB sees the first instruction
            pc = uc.reg_read(self.spec.pc)
        while True:
            self.mem.last_fault = None
            debugger = self.debugger
            try:
                if debugger is not None:
                    # counted slices: the loop sees GDB's Ctrl-C at the end of each one
                    uc.emu_start(pc, STOP_ADDRESS, count=debugger.slice_instructions)
                elif not (self.sched.multi or self.signal_bridge is not None):
                    self.running_unsliced = True  # until a syscall makes slices needed
                    try:
                        uc.emu_start(pc, STOP_ADDRESS)
                    finally:
                        self.running_unsliced = False
                elif self.stops_between_blocks:
                    # other threads, or host signals, need the loop back now and then
                    # (preempt.py): a tick stops the engine between two blocks
                    TICKER.arm(uc)
                    try:
                        uc.emu_start(pc, STOP_ADDRESS)
                    finally:
                        TICKER.disarm()
                else:
                    uc.emu_start(pc, STOP_ADDRESS, count=SLICE_INSTRUCTIONS)
            except UcError as exc:
                if self.exit.status is not None or self.exit.signal is not None:
                    break
                self.pending_fatal = self._fault_signal(exc)
            if self._hook_error is not None:
                error, self._hook_error = self._hook_error, None
                raise error
            if self.exit.status is not None or self.exit.signal is not None:
                break
            if self.pending_fatal is not None:
                fatal, self.pending_fatal = self.pending_fatal, None
                if debugger is not None:  # GDB sees the fault first and may drop it
                    fatal = debugger.on_signal(self, fatal)
                if fatal is not None:
                    self.force_signal(fatal)
            if self.sched.multi:
                if not self.sched.switch():
                    break
            if self.signals.pending and self.sched.current.state == "runnable":
                self.deliver_signals()
            if self.exit.status is not None or self.exit.signal is not None:
                break
            if debugger is not None:
                debugger.after_slice(self)  # breakpoint, step, Ctrl-C: GDB's turn
            pc = read_pc()
        if self.debugger is not None:
            self.debugger.on_exit(self.exit)
        return self.exit

    def _fault_signal(self, exc: UcError) -> FatalSignal:
        """The signal Linux would send for the fault that stopped unicorn."""
        fault = self.mem.last_fault
        if fault is not None:
            code = 2 if fault.mapped else 1  # SEGV_ACCERR / SEGV_MAPERR
            address = fault.address
            if fault.access != UC_MEM_FETCH:
                address = self._exact_fault_address(fault.address) or address
            if fault.past_file_end:  # a file page past end-of-file (mm/filemap.c)
                return FatalSignal(signal.SIGBUS, BUS_ADRERR, address)
            return FatalSignal(signal.SIGSEGV, code, address)
        pc = self.uc.reg_read(self.spec.pc)
        if self._is_breakpoint(pc):
            # an arch whose breakpoint unicorn reports as an invalid instruction, pc at it
            return FatalSignal(signal.SIGTRAP, TRAP_BRKPT, pc)
        return FatalSignal(signal.SIGILL, ILL_ILLOPC, pc)

    def _is_breakpoint(self, pc: int) -> bool:
        """Whether the instruction at `pc` is one of the arch's breakpoint encodings."""
        try:
            for size, encoding in self.linux.breakpoints:
                if int.from_bytes(self.mem.read(pc, size), "little") == encoding:
                    return True
        except GuestFault:
            pass
        return False

    def _exact_fault_address(self, page_address: int) -> int | None:
        """The byte address a faulting load/store touched (si_addr).

        unicorn's TLB-fill hook only names the page. Replay the one faulting instruction with
        that page made accessible and a memory hook watching it, then undo everything: the
        registers, the page's bytes and the TLB.
        """
        page = page_address & ~(self.spec.page_size - 1)
        pc = self.uc.reg_read(self.spec.pc)
        context = self.uc.context_save()
        seen: list[int] = []

        def on_access(
            uc: Uc, _access: int, address: int, _size: int, _value: int, _d: object
        ) -> None:
            if not seen:
                seen.append(address)

        scratch = self.mem.lend_page(page)
        hook = self.uc.hook_add(
            UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE,
            on_access,
            None,
            page,
            page + self.spec.page_size - 1,
        )
        try:
            with self.exit_checks.exact_stops():  # one instruction, not the rest of its block
                self.uc.emu_start(pc, STOP_ADDRESS, count=1)
        except UcError:
            pass
        finally:
            self.uc.hook_del(hook)
            self.mem.return_page(page, scratch)
            self.uc.context_restore(context)
        return seen[0] if seen else None

    def _on_interrupt_raw(self, _handle: int, intno: int, _data: int) -> None:
        # The system-call round trip: every attribute is read once, into a local (each read
        # of `self.x` is a dictionary lookup, and this runs for every call the guest makes).
        try:
            if intno == self._trap_intno:
                linux = self.linux
                if linux.syscall_discard_flag[0]:  # state Linux drops at calls (SVE's P)
                    linux.syscall_discard(self.uc)
                regs = self._regs
                values = regs.read()
                nr = values[0]
                raw = values[1:]
                sched = self.sched
                if sched.multi:
                    table = self.table
                    sysdef = table.get(nr)
                    if sysdef is not None and sysdef.pending:  # its module is not imported yet
                        sysdef = table[nr] = sysdef.resolve()
                    if sysdef is not None and sysdef.blocks:
                        sched.offload(nr, raw)
                        self.uc.emu_stop()
                        return
                result = self.dispatch(nr, raw)
                exit_state = self.exit
                if exit_state.status is not None or exit_state.signal is not None:
                    self.uc.emu_stop()
                    return
                if result is not None:  # None: the call set the registers itself
                    regs.write_result(result & MASK64)
                if self.signals.pending or sched.current.state != "runnable":
                    self.uc.emu_stop()  # the run loop delivers them / switches threads
                elif self.running_unsliced and (self.signal_bridge is not None or sched.multi):
                    # the call caught a signal or made a thread: the engine, started without
                    # slices, must come back to the loop now and then from here on
                    self.uc.emu_stop()
                return
            emulate = self.linux.emulated_traps.get(intno)
            if emulate is not None and emulate(
                self.uc, self.uc.reg_read(self.spec.pc) - self.linux.pc_past_trap
            ):
                return  # done as Linux does it (riscv's rdtime); pc is already past it
            self.pending_fatal = self._trap_signal(intno)
            self.uc.emu_stop()
        except BaseException as exc:  # carried out of emu_start by run()
            self._hook_error = exc
            self.uc.emu_stop()

    def _trap_signal(self, intno: int) -> FatalSignal:
        """The signal for a trap unicorn reported by number (the arch's table in
        qemuser.user.linux); the pc is left at the trapping instruction, where Linux's signal
        frame has it."""
        linux = self.linux
        pc = self.uc.reg_read(self.spec.pc)
        if linux.pc_past_trap:  # unicorn has already stepped past the trapping instruction
            pc -= linux.pc_past_trap
            self.uc.reg_write(self.spec.pc, pc)
        if self.mem.last_fault is None:  # not a page the TLB refused
            address = linux.alignment_trap(self.uc, intno, pc)
            if address is not None:
                return FatalSignal(signal.SIGBUS, BUS_ADRALN, address)
        signo, code = linux.trap_signals.get(intno, linux.trap_default)
        return FatalSignal(signo, code, pc)

    def dispatch(self, nr: int, raw: tuple[int, ...]) -> int:
        table = self.table
        sysdef = table.get(nr)
        if sysdef is None:
            self._report_unknown(nr, raw)
            return -errno.ENOSYS
        if sysdef.pending:  # the guest's first call of it: import its handler module
            sysdef = table[nr] = sysdef.resolve()
        strace = self.config.strace
        if strace and sysdef.ret == "none":
            self.log_line(_strace().format_call(self, sysdef, raw, None))
        try:
            result = sysdef.call(self, raw)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                result = self.interrupted(sysdef, raw)
            else:
                result = -(exc.errno or errno.EIO)
        except GuestFault:
            result = -errno.EFAULT
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a bug of ours: say so in one line, fail the call
            self.log_line(f"qemuser: internal error in {sysdef.name}: {exc!r}")
            if os.environ.get("QEMUSER_DEBUG"):
                raise
            result = -errno.ENOSYS
        if strace and sysdef.ret != "none":
            self.log_line(_strace().format_call(self, sysdef, raw, result))
        return result

    def interrupted(self, sysdef: SyscallDef, raw: tuple[int, ...]) -> int | None:
        """A host signal cut a blocking call short. Linux restarts it when no guest handler
        runs for the signal, or when the handler has SA_RESTART (except for the calls that are
        never restarted); otherwise the guest gets EINTR after its handler."""
        if self.sched.on_worker():
            self.sched.note_interrupted(sysdef, raw)  # decided when its thread runs again
            return None
        pending = [
            p
            for p in self.signals.for_thread(self.sched.current.tid)
            if not self.signals.mask & bit(p.signo)
        ]
        handled = [
            p for p in pending if self.signals.action(p.signo).handler not in (SIG_DFL, SIG_IGN)
        ]
        if handled:
            action = self.signals.action(min(p.signo for p in handled))
            restart = action.flags & SA_RESTART and sysdef.restart
        else:
            restart = sysdef.restart or not pending
        if restart:
            # back to the trap instruction, with its first argument as it was
            pc = self.uc.reg_read(self.spec.pc)
            self.uc.reg_write(self.spec.pc, pc - self._sys.insn_size)
            self._regs.write_result(raw[0])
            return None
        return -errno.EINTR

    def _report_unknown(self, nr: int, raw: tuple[int, ...]) -> None:
        show = self.config.strace or "unimp" in self.config.log_items
        if show and nr not in self.reported_unknown:
            self.reported_unknown.add(nr)
            name = self.names_by_number.get(nr, "unknown")
            self.log_line(f"qemuser: unsupported syscall {nr} ({name})")
        if self.config.strace:
            self.log_line(
                _strace().format_unknown_call(self.pid, nr, self.names_by_number.get(nr), raw)
            )
