"""qemu-user's `-g port`: GDB debugging one guest process (the protocol is qemuser.gdb's).

`qemuser-<arch> -g 1234 prog` (or QEMU_GDB=1234) starts the guest stopped at its first
instruction (the ELF interpreter's entry for a dynamic program) and waits for GDB on TCP port
1234; as in qemu's gdbstub/user.c, anything that is not a port number is the path of a unix
socket to listen on. `UserTarget` is the guest as GDB sees it: registers, memory, breakpoints,
watchpoints, the auxiliary vector (so that GDB finds the dynamic loader and the load address of
a PIE), the program's name and its files through vFile (with the sysroot's rule for paths).
`GdbStub` is what the run loop talks to: every signal the guest is about to take (its own
faults included) is reported as a stop first, as qemu does; GDB then passes it on
(`C`/`vCont;C`) or drops it. Ctrl-C from GDB stops a running guest (seen between two slices
of guest code: a guest blocked in a system call stops when the call returns).

Breakpoints never touch guest memory: each is a unicorn code hook bounded to its one address,
which stops the engine before the instruction there runs. Watchpoints are memory hooks bounded
to the watched bytes (accesses the guest's system calls make on its behalf are not seen). The
guest is seen as one thread: a multi-threaded guest is reported through the thread that is
running when it stops. A forked child and a program the guest execs run undebugged.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, NoReturn

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, Uc, UcError
from unicorn.unicorn import UcContext
from unicorn.unicorn_const import UC_MEM_WRITE

from qemuser.gdb.session import GdbSession, Resume
from qemuser.gdb.target import BREAKPOINT_KINDS
from qemuser.gdb.tdesc import TargetDescription
from qemuser.loader.memory import GuestFault
from qemuser.user.runtime import ExitState, FatalSignal

if TYPE_CHECKING:
    from qemuser.syscalls.sigstate import PendingSignal
    from qemuser.user.runtime import RuntimeProcess

# While GDB is attached the guest runs in counted slices, so that Ctrl-C is seen at the end of
# one (in about a millisecond).
CONTINUE_SLICE = 100_000

_WATCH_ACCESS = {2: UC_HOOK_MEM_WRITE, 3: UC_HOOK_MEM_READ, 4: UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE}


class GuestFiles:
    """vFile's view of the guest's files: its paths looked up as its own calls do."""

    def __init__(self, proc: RuntimeProcess) -> None:
        self.proc = proc

    def open(self, path: bytes) -> int:
        return os.open(self.proc.host_path(path), os.O_RDONLY | os.O_CLOEXEC)

    def readlink(self, path: bytes) -> bytes:
        return os.readlink(self.proc.host_path(path))

    def forget(self, fd: int) -> None:
        pass


class UserTarget:
    """One guest process as a qemuser.gdb.target.Target."""

    def __init__(self, proc: RuntimeProcess) -> None:
        self.proc = proc
        self.description = TargetDescription(proc.spec, osabi="GNU/Linux")
        self.files: GuestFiles | None = GuestFiles(proc)
        self.breakpoints: dict[int, int] = {}  # guest address -> unicorn hook handle
        self.watchpoints: dict[tuple[int, int, int], int] = {}  # (kind, address, length) -> hook
        self.skip_at: int | None = None  # a breakpoint to pass over once, when resuming at it
        self.hit_breakpoint = False
        self.hit_watch: tuple[int, int] | None = None  # (kind, address)
        self._watch_context: UcContext | None = None  # the CPU before the watched instruction
        self._watch_old_bytes: tuple[int, bytes] | None = None  # what it overwrote

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def thread_name(self) -> bytes:
        return self.proc.thread_name

    # registers

    def read_registers(self) -> list[int]:
        regs = self.description.registers
        try:
            return self.proc.uc.reg_read_batch([reg.uc_reg for reg in regs])
        except UcError as exc:
            raise ValueError(str(exc)) from None

    def read_register(self, number: int) -> int:
        try:
            return self.proc.uc.reg_read(self.description.registers[number].uc_reg)
        except UcError as exc:
            raise ValueError(str(exc)) from None

    def write_register(self, number: int, value: int) -> None:
        reg = self.description.registers[number]
        if reg.write_mask is not None:
            value &= reg.write_mask
        try:
            self.proc.uc.reg_write(reg.uc_reg, value)
        except UcError as exc:
            raise ValueError(str(exc)) from None

    def set_pc(self, address: int) -> None:
        try:
            self.proc.uc.reg_write(self.proc.spec.pc, address)
        except UcError as exc:
            raise ValueError(str(exc)) from None

    # memory

    def read_memory(self, address: int, length: int) -> bytes | None:
        mem = self.proc.mem
        if not mem.is_fully_mapped(address, address + length):
            return None  # the engine maps more than the guest has (its own pages)
        try:
            return mem.read(address, length)
        except GuestFault:
            pass
        try:  # pages the guest cannot read (GDB may look anywhere): the engine's own view
            return mem.read(address, length, check=False)
        except (GuestFault, UcError):
            return None

    def write_memory(self, address: int, data: bytes) -> bool:
        mem = self.proc.mem
        if not mem.is_fully_mapped(address, address + len(data)):
            return False
        try:
            mem.write_init(address, data)  # GDB may patch read-only code pages
        except (GuestFault, UcError):
            return False
        return True

    # breakpoints and watchpoints

    def insert_point(self, kind: int, address: int, length: int) -> bool:
        try:
            return self._insert_point(kind, address, length)
        except UcError as exc:
            raise ValueError(str(exc)) from None

    def _insert_point(self, kind: int, address: int, length: int) -> bool:
        uc = self.proc.uc
        if kind in BREAKPOINT_KINDS:  # software and hardware breakpoints are the same here
            if address not in self.breakpoints:
                self.breakpoints[address] = uc.hook_add(
                    UC_HOOK_CODE, self._on_breakpoint, None, address, address
                )
            return True
        key = (kind, address, length)
        if key not in self.watchpoints:
            self.watchpoints[key] = uc.hook_add(
                _WATCH_ACCESS[kind], self._on_watch, kind, address, address + max(length, 1) - 1
            )
        return True

    def remove_point(self, kind: int, address: int, length: int) -> bool:
        try:
            return self._remove_point(kind, address, length)
        except UcError as exc:
            raise ValueError(str(exc)) from None

    def _remove_point(self, kind: int, address: int, length: int) -> bool:
        uc = self.proc.uc
        if kind in BREAKPOINT_KINDS:
            if address in self.breakpoints:
                uc.hook_del(self.breakpoints.pop(address))
            return True
        key = (kind, address, length)
        if key in self.watchpoints:
            uc.hook_del(self.watchpoints.pop(key))
        return True

    def remove_all_points(self) -> None:
        for hook in [*self.breakpoints.values(), *self.watchpoints.values()]:
            try:
                self.proc.uc.hook_del(hook)
            except UcError:
                pass
        self.breakpoints.clear()
        self.watchpoints.clear()
        self.skip_at = None

    def watch_hit(self) -> tuple[int, int] | None:
        return self.hit_watch

    def arm_skip(self) -> None:
        pc = self.proc.uc.reg_read(self.proc.spec.pc)
        self.skip_at = pc if pc in self.breakpoints else None

    def _on_breakpoint(self, uc: Uc, address: int, _size: int, _data: object) -> None:
        if self.skip_at == address:
            self.skip_at = None  # resuming at this breakpoint: its instruction runs once
            return
        self.skip_at = None
        self.hit_breakpoint = True
        uc.emu_stop()

    def _on_watch(
        self, uc: Uc, access: int, address: int, size: int, _value: int, kind: object
    ) -> None:
        """A watched access, about to happen. A stop requested here lands after the access but
        before the rest of its instruction (pc unchanged): `undo_watched_instruction` then
        returns to the state saved now."""
        assert isinstance(kind, int)
        if self.hit_watch is not None:
            return
        self.hit_watch = (kind, address)
        self._watch_context = uc.context_save()
        self._watch_old_bytes = None
        if access == UC_MEM_WRITE:
            self._watch_old_bytes = (address, bytes(uc.mem_read(address, size)))
        uc.emu_stop()

    def undo_watched_instruction(self) -> None:
        """Back to the state before the watched instruction: its registers and the bytes it
        stored. GDB takes aarch64 and riscv watchpoints to trigger before the access (its
        `have_nonsteppable_watchpoint`): it steps over the instruction itself, with the
        watchpoints out, and then looks at the value."""
        if self._watch_context is None:
            return
        self.proc.uc.context_restore(self._watch_context)
        self._watch_context = None
        if self._watch_old_bytes is not None:
            address, old = self._watch_old_bytes
            self.proc.mem.write_init(address, old)
            self._watch_old_bytes = None

    # optional features

    def auxv(self) -> bytes | None:
        stack = self.proc.stack
        if stack is None:
            return b""
        size = len(stack.auxv) * 16  # the pairs, AT_NULL's included
        try:
            return self.proc.mem.read(stack.auxv_addr, size, check=False)
        except GuestFault:
            return b""

    def exec_file(self) -> bytes | None:
        return os.fsencode(self.proc.exe_path)

    def kill(self) -> NoReturn:
        """k / vKill: qemu-user exits at once, with status 0."""
        if sys.stdout is not None:  # None when started with fd 1 closed
            sys.stdout.flush()
        os._exit(0)

    def reserve_fd(self, fd: int, reserved: bool) -> None:
        if reserved:
            self.proc.host_fd_reserved.add(fd)
        else:
            self.proc.host_fd_reserved.discard(fd)


class GdbStub:
    """The debugger's side of one guest process. The run loop calls `attach` before the first
    instruction, `on_signal` when the guest faults, `on_delivery` before it takes a signal,
    `after_slice` after each engine run and `on_exit` at the end; `slice_instructions` bounds
    its next engine run (one instruction when GDB steps)."""

    def __init__(self, session: GdbSession) -> None:
        self.session = session
        self.proc: RuntimeProcess | None = None
        self.target: UserTarget | None = None
        self.stepping = False
        self._fresh_resume = False
        self._fault: FatalSignal | None = None
        self._exact_stops: AbstractContextManager[None] | None = None

    @classmethod
    def open(cls, where: str) -> GdbStub:
        return cls(GdbSession.open(where))

    @property
    def slice_instructions(self) -> int:
        """How many instructions the run loop's next engine run may take at most."""
        return 1 if self.stepping else CONTINUE_SLICE

    # ---- hooks called by the run loop ---------------------------------------------------------

    def attach(self, proc: RuntimeProcess) -> None:
        """Wait for GDB, then serve it with the guest stopped at its first instruction."""
        self.proc = proc
        self.target = UserTarget(proc)
        self.session.accept(self.target)
        # A breakpoint's engine stop must land before its instruction, not at the end of the
        # block (where the per-access exit checks are off, exit_checks.py): exact stops for as
        # long as GDB is attached.
        self._exact_stops = proc.exit_checks.exact_stops()
        self._exact_stops.__enter__()
        self._resume_here(proc, self._serve_and_resume(self.session.serve()))

    def on_signal(self, proc: RuntimeProcess, fatal: FatalSignal) -> FatalSignal | None:
        """A fault of the guest's: GDB sees it first, then says which signal (if any) the
        guest gets. Returns the signal to force on the guest, or None."""
        if not self.session.connected:
            return fatal
        self._fault = fatal
        self._target.hit_breakpoint = False
        forced = self._serve_and_resume(self.session.report_stop(fatal.signo))
        # the run loop forces the signal (which may move pc to a handler): the skip over a
        # breakpoint at the resume address is armed after that, in after_slice
        self._fresh_resume = True
        return forced

    def on_delivery(self, proc: RuntimeProcess, pending: PendingSignal) -> PendingSignal | None:
        """A signal the guest is about to take (qemu reports each one): GDB sees it first and
        passes it on, or not. Returns the signal to deliver, or None."""
        if not self.session.connected:
            return pending
        self._fault = None
        self._target.hit_breakpoint = False
        forced = self._serve_and_resume(self.session.report_stop(pending.signo))
        self._fresh_resume = True  # the signal's frame may move pc: skip armed in after_slice
        if not self.session.connected:  # detached, or GDB went away: the guest takes it
            return pending
        if forced is None:  # GDB dropped it
            return None
        if forced.signo == pending.signo:
            return pending
        proc.force_signal(forced)  # GDB asked for another signal instead
        return None

    def after_slice(self, proc: RuntimeProcess) -> None:
        """After one run of the engine: report a breakpoint, watchpoint, finished step or
        Ctrl-C, and serve GDB until it resumes the guest."""
        if not self.session.connected:
            return
        target = self._target
        if self._fresh_resume:  # GDB has just resumed the guest after a reported fault
            self._fresh_resume = False
            target.arm_skip()
            return
        if self.session.interrupted.is_set():
            signo = signal.SIGINT
        elif target.hit_watch is not None:
            target.undo_watched_instruction()
            signo = signal.SIGTRAP
        elif target.hit_breakpoint or self.stepping:
            signo = signal.SIGTRAP
        else:
            return
        self._fault = None
        self._resume_here(proc, self._serve_and_resume(self.session.report_stop(signo)))

    def on_exit(self, state: ExitState) -> None:
        """W<status> or X<signal>: GDB's inferior is gone."""
        if not self.session.connected:
            return
        self.session.report_exit(state.status, state.signal)
        self.disconnect()

    def forget_in_fork_child(self) -> None:
        """A forked guest child runs on undebugged (qemu-user does the same without
        follow-fork): it drops its copy of the connection (the parent's stays open), the
        breakpoints and the exact stops."""
        self.session.forget_in_fork_child()
        self.disconnect()
        if self.proc is not None:
            self.proc.debugger = None

    def disconnect(self) -> None:
        """Forget GDB: the guest runs on without breakpoints."""
        self.session.disconnect()
        if self.target is not None:
            self.target.remove_all_points()
        self.stepping = False
        if self._exact_stops is not None:
            self._exact_stops.__exit__(None, None, None)
            self._exact_stops = None

    # ---- resuming ------------------------------------------------------------------------------

    @property
    def _target(self) -> UserTarget:
        assert self.target is not None
        return self.target

    def _resume_here(self, proc: RuntimeProcess, forced: FatalSignal | None) -> None:
        """Resuming outside a fault: a signal GDB passes is delivered now."""
        if forced is not None:
            proc.force_signal(forced)
        if self.target is not None:
            self.target.arm_skip()

    def _serve_and_resume(self, resume: Resume | None) -> FatalSignal | None:
        target = self._target
        target.hit_breakpoint = False
        target.hit_watch = None
        self.session.interrupted.clear()
        forced: FatalSignal | None = None
        if resume is None:  # detached, or GDB went away: the guest runs on undebugged
            self.disconnect()
            return self._fault
        self.stepping = resume.step
        if resume.signo:
            fault = self._fault
            if fault is not None and fault.signo == resume.signo:
                forced = fault
            else:
                forced = FatalSignal(resume.signo)
        self._fault = None
        if not resume.step:
            self.session.start_watcher()
        return forced
