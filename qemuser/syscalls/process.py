"""A guest process: its CPU, address space, files, and the loop that runs it."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from unicorn import UC_HOOK_INTR, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, Uc, UcError
from unicorn.unicorn_const import UC_MEM_FETCH

from qemuser.cpu import CPUS, CpuModel, CpuSpec
from qemuser.cpu.exit_checks import ExitChecks
from qemuser.loader.elf import (
    ElfInfo,
    LoadedImage,
    LoadError,
    check_arch,
    load_image,
    read_elf_info,
)
from qemuser.loader.memory import STOP_ADDRESS, AddressSpace, GuestFault, add_raw_hook
from qemuser.loader.stack import (
    AT_BASE,
    AT_CLKTCK,
    AT_EGID,
    AT_ENTRY,
    AT_EUID,
    AT_EXECFD,
    AT_EXECFN,
    AT_FLAGS,
    AT_GID,
    AT_HWCAP,
    AT_HWCAP2,
    AT_MINSIGSTKSZ,
    AT_PAGESZ,
    AT_PHDR,
    AT_PHENT,
    AT_PHNUM,
    AT_PLATFORM,
    AT_RANDOM,
    AT_SECURE,
    AT_UID,
    PLACEHOLDER_EXECFN,
    PLACEHOLDER_PLATFORM,
    PLACEHOLDER_RANDOM,
    InitialStack,
    build_stack,
)
from qemuser.syscalls.abi.fcntl import OpenFlagCodec
from qemuser.syscalls.config import RunConfig
from qemuser.syscalls.deferred import Deferred, table_entry
from qemuser.syscalls.linux import LINUX_ARCHES, LinuxArch, emulate_riscv_time_read, hwcaps
from qemuser.syscalls.numbers import numbers_for
from qemuser.syscalls.preempt import TICKER
from qemuser.syscalls.registry import (
    MASK64,
    SyscallDef,
    format_call,
    format_taken_signal,
    format_unknown_call,
)
from qemuser.syscalls.sigstate import (
    DEFAULT_CORE,
    DEFAULT_IGNORE,
    DEFAULT_STOP,
    HOST_RESERVED,
    SA_NODEFER,
    SA_ONSTACK,
    SA_RESETHAND,
    SA_RESTART,
    SA_RESTORER,
    SIG_DFL,
    SIG_IGN,
    SS_AUTODISARM,
    SS_DISABLE,
    SS_ONSTACK,
    UNBLOCKABLE,
    HostSignalBridge,
    PendingSignal,
    SigAction,
    SignalState,
    bit,
    pack_fault_info,
)
from qemuser.syscalls.threads import OFFLOADED, SLICE_INSTRUCTIONS, Scheduler

if TYPE_CHECKING:
    from qemuser.syscalls.gdbstub import GdbStub

# Never restarted, whatever SA_RESTART says (man 7 signal).
NEVER_RESTARTED = frozenset(
    {
        "nanosleep",
        "clock_nanosleep",
        "ppoll",
        "pselect6",
        "epoll_pwait",
        "epoll_pwait2",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "io_getevents",
    }
)

AT_FLAGS_PRESERVE_ARGV0 = 1


_INTERRUPT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)


def add_raw_interrupt_hook(uc: Uc, callback) -> object:
    """UC_HOOK_INTR as a raw ctypes hook (the syscall hot path: see add_raw_hook).

    The callback gets (engine handle, intno, user data) as C passes them, and must not raise.
    Returns the ctypes function object, which must be kept alive with the engine.
    """
    function = _INTERRUPT_CALLBACK(callback)
    add_raw_hook(uc, UC_HOOK_INTR, function)
    return function


class SyscallRegisters:
    """Reads a call's number and arguments in one C call, and writes its result.

    unicorn's Python reg_read costs ~5 µs a register (class lookups per call); a prepared
    uc_reg_read_batch over the same seven registers costs well under 1 µs. The C functions
    are taken without the binding's argtypes: every argument here is already a ctypes object
    or a small int, and ctypes' per-argument conversion doubled the cost of each call.
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
        self._read_batch = uclib["uc_reg_read_batch"]  # [] makes a fresh, argtypes-free one
        self._write = uclib["uc_reg_write"]
        self._unpack = struct.Struct(f"<{self._count}Q").unpack_from

    def read(self) -> tuple[int, ...]:
        """(number, arg0, ..., arg5)."""
        self._read_batch(self._handle, self._ids, self._pointers, self._count)
        return self._unpack(self._values)

    def write_result(self, value: int) -> None:
        self._ret_value.value = value
        self._write(self._handle, self._ret_id, self._ret_pointer)


def host_path_in(sysroot: str | None, path: bytes) -> bytes:
    """`path` inside `sysroot` when it exists there (absolute paths only), else `path`.

    A symbolic link in the sysroot counts even when it dangles, so that readlink and lstat of
    the sysroot's own links work (qemu-user's access(F_OK) would skip them)."""
    if sysroot and path.startswith(b"/"):
        candidate = os.fsencode(sysroot).rstrip(b"/") + path
        if os.path.lexists(candidate):
            return candidate
    return path


class ExecRequest(BaseException):
    """execve of a foreign program: unwind out of the engine and start `config` in its place.

    A BaseException so that no handler's `except Exception` swallows it on the way out."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config.program)
        self.config = config


# eq=False: compared by identity only; every start would compile the generated __eq__.
@dataclass(eq=False)
class SignalFd:
    """A guest signalfd: the pipe end that wakes its readers, and the signals it takes."""

    write_end: int
    mask: int


@dataclass(eq=False)
class ExitState:
    """How the guest ended, once it has."""

    status: int | None = None  # exit status
    signal: int | None = None  # killed by this signal
    core: bool = False


@dataclass(eq=False)
class FatalSignal:
    """A signal the guest's own instruction raised (a fault, a trap), or one GDB forces."""

    signo: int
    code: int = 0
    address: int = 0


# repr=False too: a Process's repr would dump the engine, memory and tables, and compiling it
# costs every start.
@dataclass(eq=False, repr=False)
class Process:
    """One guest program in this host process: engine, memory, files, signals, threads."""

    config: RunConfig
    spec: CpuSpec = field(init=False)
    model: CpuModel = field(init=False)
    linux: LinuxArch = field(init=False)
    uc: Uc = field(init=False)
    mem: AddressSpace = field(init=False)
    table: dict[int, SyscallDef] = field(init=False)
    exit: ExitState = field(default_factory=ExitState)
    log: TextIO = field(default=sys.stderr)
    exe_path: str = ""  # host path of the running program (for /proc/self/exe)
    image: LoadedImage | None = None
    interp: LoadedImage | None = None
    stack: InitialStack | None = None
    reported_unknown: set[int] = field(default_factory=set)
    umask_value: int = 0o022
    stack_low: int = 0
    debugger: GdbStub | None = None  # -g: the run loop reports its stops to GDB

    def __post_init__(self) -> None:
        self.spec = CPUS[self.config.arch]
        try:
            self.model = self.spec.model(self.config.cpu_model)
        except KeyError:
            raise LoadError(
                f"unknown CPU model '{self.config.cpu_model}' for {self.spec.name} (try -cpu help)"
            ) from None
        self.linux = LINUX_ARCHES[self.spec.name]
        self.uc = self.spec.new_engine(self.model)
        # user mode never stops the guest from a memory hook, except in the fault replay below
        self.exit_checks = ExitChecks(self.uc)
        # without those checks, a stop from another thread lands between blocks (preempt.py)
        self.stops_between_blocks = self.exit_checks.skip()
        self.running_unsliced = False  # the engine runs with no tick and no count (run())
        self.mem = AddressSpace(self.uc, self.spec.page_size, self.linux.mmap_top)
        numbers = numbers_for(self.spec.name)
        # number -> declaration, or a Deferred whose module dispatch imports on its first call
        self.table: dict[int, SyscallDef | Deferred] = {}
        for name, nr in numbers.items():
            entry = table_entry(name)
            if entry is not None:
                self.table[nr] = entry
        self.names_by_number = {nr: name for name, nr in numbers.items()}
        self.pid = os.getpid()
        self._sys = self.spec.syscall
        self._regs = SyscallRegisters(self.uc, self._sys.number, self._sys.args, self._sys.ret)
        self._hook_error: BaseException | None = None
        self._trap_intno = self._sys.trap_intno
        self._interrupt_hook = add_raw_interrupt_hook(self.uc, self._on_interrupt_raw)
        self.pending_fatal: FatalSignal | None = None
        self.host_fd_reserved: set[int] = set()
        self.sched = Scheduler(self, self.pid)
        self.signals = SignalState()
        self.signals.router = self._route_to_signalfd
        self.signalfds: dict[int, SignalFd] = {}
        self.posix_timers: dict = {}  # timer id -> timers.GuestTimer
        self.kernel_timer_signals: set[int] = set()  # raised by armed setitimer timers
        self.signal_bridge: HostSignalBridge | None = None
        self.sigreturn_trampoline = 0
        self.restore_mask_after_handler: int | None = None  # rt_sigsuspend's saved mask
        self.vfork_pipe_read: int | None = None
        self.vfork_pipe_write: int | None = None
        self.open_codec = OpenFlagCodec(self.spec.name)
        program_name = os.path.basename(self.config.argv[0]) if self.config.argv else b""
        self.thread_name: bytes = program_name[:15] if isinstance(program_name, bytes) else b""
        self.umask_value = os.umask(0o022)
        os.umask(self.umask_value)

    # ---- paths -----------------------------------------------------------------------------

    def host_path(self, path: bytes) -> bytes:
        """Where a guest path lies on the host: absolute paths inside the sysroot first."""
        return host_path_in(self.config.sysroot, path)

    def open_special(self, path: bytes, flags: int) -> int | None:
        """Files the kernel synthesises for the process itself (/proc/self/maps, …): an fd to
        their contents as this guest should see them, or None for an ordinary path."""
        from qemuser.syscalls.procfs import synthetic_file

        data = synthetic_file(self, path)
        if data is None:
            return None
        fd = os.memfd_create("qemuser-proc", os.MFD_CLOEXEC if flags & 0o2000000 else 0)
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    # ---- the calling guest thread -----------------------------------------------------------

    @property
    def tid(self) -> int:
        return self.sched.running().tid

    @property
    def clear_child_tid(self) -> int:
        return self.sched.running().clear_child_tid

    @clear_child_tid.setter
    def clear_child_tid(self, address: int) -> None:
        self.sched.running().clear_child_tid = address

    @property
    def robust_list(self) -> tuple[int, int]:
        return self.sched.running().robust_list

    @robust_list.setter
    def robust_list(self, value: tuple[int, int]) -> None:
        self.sched.running().robust_list = value

    def write_result(self, value: int) -> None:
        self._regs.write_result(value & MASK64)

    def exit_thread(self, status: int) -> None:
        """exit(): the calling thread ends; the last one ends the process."""
        sched = self.sched
        thread = sched.current
        if sched.live_threads() <= 1:
            self.request_exit(status)
            return
        if thread.clear_child_tid:
            # CLONE_CHILD_CLEARTID: zero the tid word and wake its waiters (pthread_join)
            try:
                self.mem.write_u32(thread.clear_child_tid, 0)
            except GuestFault:
                pass
            sched.futex_wake(thread.clear_child_tid, 1)
        sched.exit_thread(thread)
        self.uc.emu_stop()

    def resolve_exec_path(self, path: bytes) -> bytes:
        """The host file an execve of `path` runs (sysroot first; /proc/self/exe)."""
        for prefix in (b"/proc/self/", f"/proc/{self.pid}/".encode()):
            if path == prefix + b"exe":
                return os.fsencode(self.exe_path)
        return self.host_path(path)

    # ---- process life cycle ------------------------------------------------------------------

    def _close_reserved(self, fd: int) -> None:
        self.host_fd_reserved.discard(fd)
        try:
            os.close(fd)
        except OSError:
            pass

    def prepare_vfork(self) -> None:
        """A pipe whose write end the vfork child holds until it execs or exits."""
        self.vfork_pipe_read, self.vfork_pipe_write = os.pipe2(os.O_CLOEXEC)
        # the guest must not close them (a child closing all its fds before exec is common)
        self.host_fd_reserved.update((self.vfork_pipe_read, self.vfork_pipe_write))

    def on_fork_child(self) -> None:
        if self.debugger is not None:
            self.debugger.forget_in_fork_child()
        self.sched.current.tid = self.pid
        self.sched.forget_others()
        if self.vfork_pipe_read is not None:
            self._close_reserved(self.vfork_pipe_read)
            self.vfork_pipe_read = None

    def on_fork_parent(self) -> None:
        if self.vfork_pipe_write is not None:
            self._close_reserved(self.vfork_pipe_write)
            self.vfork_pipe_write = None

    def before_exec(self, native: bool) -> None:
        """What execve does to signals: handled ones go back to SIG_DFL, ignored ones and the
        mask stay. A native program gets them from the host kernel, so the host's own
        dispositions and mask are set to the guest's first."""
        self.log.flush()
        if self.vfork_pipe_write is not None:
            self._close_reserved(self.vfork_pipe_write)
            self.vfork_pipe_write = None
        for signo, action in list(self.signals.actions.items()):
            if action.handler not in (SIG_DFL, SIG_IGN):
                self.signals.actions[signo] = SigAction()
                try:
                    signal.signal(signo, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        if native:
            signal.pthread_sigmask(
                signal.SIG_SETMASK,
                {
                    s
                    for s in range(1, 65)
                    if self.signals.mask & bit(s) and s in signal.valid_signals()
                },
            )

    def inherit_from(self, previous: Process) -> None:
        """The part of a process that survives its execve of a foreign program."""
        self.signals.mask = previous.signals.mask
        for signo, action in previous.signals.actions.items():
            if action.handler == SIG_IGN:
                self.signals.actions[signo] = SigAction(handler=SIG_IGN)
        self.umask_value = previous.umask_value

    def spawn_thread(
        self, flags: int, child_stack: int, parent_tid: int, tls: int, child_tid: int
    ) -> int:
        """clone() of a thread: a copy of the caller's registers on its own stack and TLS,
        returning 0 in the new thread."""
        uc = self.uc
        spec = self.spec
        saved = uc.reg_read_batch([spec.sp, spec.tls, self._sys.ret])
        if child_stack:
            uc.reg_write(spec.sp, child_stack)
        if flags & 0x80000:  # CLONE_SETTLS
            uc.reg_write(spec.tls, tls)
        uc.reg_write(self._sys.ret, 0)
        context = uc.context_save()
        uc.reg_write_batch(list(zip([spec.sp, spec.tls, self._sys.ret], saved)))
        thread = self.sched.new_thread(context, self.signals.mask)
        if flags & 0x100000 and parent_tid:  # CLONE_PARENT_SETTID
            self.mem.write_u32(parent_tid, thread.tid)
        if flags & 0x1000000 and child_tid:  # CLONE_CHILD_SETTID
            self.mem.write_u32(child_tid, thread.tid)
        if flags & 0x200000:  # CLONE_CHILD_CLEARTID
            thread.clear_child_tid = child_tid
        return thread.tid

    # ---- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        cfg = self.config
        info = read_elf_info(cfg.program, cfg.exec_fd)
        check_arch(info, self.spec)
        self.exe_path = os.path.abspath(cfg.program)
        data = self._read_file(cfg.program, cfg.exec_fd)
        base_hint = self.linux.pie_base if info.etype == "ET_DYN" else None
        name = self.exe_path
        self.image = load_image(self.mem, info, data, base_hint, name)
        entry = self.image.entry
        if info.interp is not None:
            interp_path = self.host_path(info.interp)
            try:
                interp_info = read_elf_info(os.fsdecode(interp_path))
            except LoadError as exc:
                hint = "" if cfg.sysroot else " (set a sysroot with -L or QEMU_LD_PREFIX)"
                raise LoadError(
                    f"cannot load interpreter {info.interp.decode(errors='replace')} of "
                    f"'{cfg.program}': {exc}{hint}"
                ) from None
            check_arch(interp_info, self.spec)
            interp_data = self._read_file(interp_info.path, None)
            self.interp = load_image(
                self.mem, interp_info, interp_data, None, os.path.abspath(interp_info.path)
            )
            entry = self.interp.entry
        self._setup_brk(self.image)
        self._setup_stack(info)
        self.uc.reg_write(self.spec.pc, entry)
        self.entry = entry
        if self.config.log_items:
            from qemuser.syscalls.trace import install_logging

            install_logging(self)

    @staticmethod
    def _read_file(path: str, fd: int | None) -> bytes:
        if fd is not None:
            return os.pread(fd, os.fstat(fd).st_size, 0)
        with open(path, "rb") as f:
            return f.read()

    def _setup_brk(self, image: LoadedImage) -> None:
        self.mem.brk_start = self.mem.brk = image.end

    def _setup_stack(self, info: ElfInfo) -> None:
        cfg = self.config
        top = self.linux.stack_top
        # qemu-user's floor: never less than 32 pages
        size = max(self.mem.page_align(cfg.stack_size), 32 * self.spec.page_size)
        self.stack_low = top - size
        if self.stack_low < self.mem.mmap_bottom:
            raise LoadError(f"stack size {cfg.stack_size} does not fit the guest address space")
        prot = 7 if info.exec_stack else 3
        self.mem.map(self.stack_low, size, prot, "[stack]")
        hwcap, hwcap2 = hwcaps(self.spec, self.uc)
        image = self.image
        assert image is not None
        flags = AT_FLAGS_PRESERVE_ARGV0 if cfg.preserve_argv0 else 0
        auxv: list[tuple[int, int]] = []
        if cfg.exec_fd is not None:
            auxv.append((AT_EXECFD, cfg.exec_fd))
        auxv += [
            (AT_HWCAP, hwcap),
            (AT_PAGESZ, self.spec.page_size),
            (AT_CLKTCK, os.sysconf("SC_CLK_TCK")),
            (AT_PHDR, image.phdr),
            (AT_PHENT, info.phentsize),
            (AT_PHNUM, info.phnum),
            (AT_BASE, self.interp.base if self.interp else 0),
            (AT_FLAGS, flags),
            (AT_ENTRY, image.entry),
            (AT_UID, os.getuid()),
            (AT_EUID, os.geteuid()),
            (AT_GID, os.getgid()),
            (AT_EGID, os.getegid()),
            (AT_SECURE, 0),
            (AT_RANDOM, PLACEHOLDER_RANDOM),
            (AT_HWCAP2, hwcap2),
            (AT_EXECFN, PLACEHOLDER_EXECFN),
            (AT_PLATFORM, PLACEHOLDER_PLATFORM),
        ]
        if self.linux.minsigstksz:
            auxv.append((AT_MINSIGSTKSZ, self.linux.minsigstksz))
        execfn = cfg.execfn if cfg.execfn is not None else os.fsencode(cfg.program)
        self.stack = build_stack(
            self.mem, top, cfg.argv, cfg.env, auxv, execfn, self.linux.platform, os.urandom(16)
        )
        self.uc.reg_write(self.spec.sp, self.stack.sp)

    # ---- running ---------------------------------------------------------------------------

    def run(self) -> ExitState:
        """Run until the guest exits or dies."""
        pc = self.entry
        uc = self.uc
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
            pc = uc.reg_read(self.spec.pc)
        if self.debugger is not None:
            self.debugger.on_exit(self.exit)
        return self.exit

    # ---- signals -----------------------------------------------------------------------------

    def set_action(self, signo: int, action: SigAction) -> None:
        self.signals.actions[signo] = action
        self.sync_host_disposition(signo)

    def sync_host_disposition(self, signo: int) -> None:
        """The host's disposition of `signo`, from the guest's: ignored stays ignored (and so
        survives a native execve), a signal the guest handles, blocks or reads from a
        signalfd is caught and queued, and a default one is left to the host kernel, which
        then does to us what Linux would do to the guest."""
        if signo in HOST_RESERVED:
            return
        action = self.signals.action(signo)
        caught = action.handler not in (SIG_DFL, SIG_IGN) or (
            action.handler == SIG_DFL
            and signo not in DEFAULT_IGNORE
            and (
                self.signals.mask & bit(signo)
                or any(sfd.mask & bit(signo) for sfd in self.signalfds.values())
            )
        )
        try:
            if caught:
                bridge = self.ensure_signal_bridge()
                signal.signal(signo, bridge.on_host_signal)
            elif action.handler == SIG_IGN:
                signal.signal(signo, signal.SIG_IGN)
            else:
                signal.signal(signo, signal.SIG_DFL)
        except (OSError, ValueError):
            pass

    def set_mask(self, mask: int) -> None:
        """The calling thread's signal mask (SIGKILL and SIGSTOP cannot be blocked)."""
        old = self.signals.mask
        self.signals.mask = mask & ~UNBLOCKABLE
        for signo in range(1, 65):
            if (old ^ self.signals.mask) & bit(signo):
                self.sync_host_disposition(signo)

    def add_signalfd(self, read_end: int, write_end: int, mask: int) -> None:
        self.signalfds[read_end] = SignalFd(write_end, mask)
        for signo in range(1, 65):
            if mask & bit(signo):
                self.sync_host_disposition(signo)

    def _route_to_signalfd(self, pending: PendingSignal) -> bool:
        from qemuser.syscalls.sigstate import signalfd_record

        if not self.signals.mask & bit(pending.signo):
            return False
        for read_end, sfd in list(self.signalfds.items()):
            if sfd.mask & bit(pending.signo):
                try:
                    os.fstat(read_end)
                    os.write(sfd.write_end, signalfd_record(pending))
                except OSError:
                    self.signalfds.pop(read_end, None)
                    continue
                return True
        return False

    def ensure_signal_bridge(self) -> HostSignalBridge:
        if self.signal_bridge is None:
            self.signal_bridge = HostSignalBridge(self)
        return self.signal_bridge

    def force_signal(self, fatal: FatalSignal) -> None:
        """A synchronous fault: delivered to the handler, else fatal (Linux's force_sig)."""
        code = fatal.code
        info = pack_fault_info(fatal.signo, code, fatal.address)
        action = self.signals.action(fatal.signo)
        if self.signals.mask & bit(fatal.signo) or action.handler in (SIG_DFL, SIG_IGN):
            if self.config.strace:
                self.log_line(format_taken_signal(info))
            self.die(fatal)
            return
        self.push_signal_frame(PendingSignal(fatal.signo, info, fatal.address), action)

    def deliver_signals(self) -> None:
        while self.exit.status is None and self.exit.signal is None:
            pending = self.signals.take()
            if pending is None:
                return
            if self.debugger is not None:  # GDB sees the signal first and may drop it
                pending = self.debugger.on_delivery(self, pending)
                if pending is None:
                    continue
            action = self.signals.action(pending.signo)
            if action.handler == SIG_IGN:
                continue
            if action.handler == SIG_DFL:
                if self.config.strace and pending.signo not in DEFAULT_IGNORE:
                    self.log_line(format_taken_signal(pending.siginfo))
                self.default_action(pending.signo)
                continue
            self.push_signal_frame(pending, action)

    def default_action(self, signo: int) -> None:
        if signo in DEFAULT_IGNORE:
            return
        if signo in DEFAULT_STOP:
            os.kill(os.getpid(), signal.SIGSTOP)
            return
        self.exit.signal = signo
        self.exit.core = signo in DEFAULT_CORE

    def _on_alt_stack(self, sp: int) -> bool:
        ss_sp, ss_flags, ss_size = self.signals.alt_stack
        return not ss_flags & SS_DISABLE and ss_sp < sp <= ss_sp + ss_size

    def push_signal_frame(self, pending: PendingSignal, action: SigAction) -> None:
        from qemuser.syscalls.abi.sigframe import FRAMES, pack_stack_t

        if self.config.strace:
            self.log_line(format_taken_signal(pending.siginfo))
        frames = FRAMES[self.spec.name]
        sp = self.uc.reg_read(self.spec.sp)
        ss_sp, ss_flags, ss_size = self.signals.alt_stack
        on_alt = self._on_alt_stack(sp)
        saved_stack = pack_stack_t(
            ss_sp, SS_ONSTACK if on_alt else (ss_flags & SS_DISABLE), ss_size
        )
        if action.flags & SA_ONSTACK and not ss_flags & SS_DISABLE and not on_alt:
            sp = ss_sp + ss_size
            if ss_flags & SS_AUTODISARM:
                self.signals.alt_stack = (0, SS_DISABLE, 0)
        saved_mask = self.signals.mask
        if self.restore_mask_after_handler is not None:
            saved_mask, self.restore_mask_after_handler = self.restore_mask_after_handler, None
        if action.flags & SA_RESTORER and action.restorer:
            return_address = action.restorer
        else:
            return_address = self.ensure_sigreturn_trampoline()
        try:
            frames.push(
                self.uc,
                self.mem,
                sp,
                action.handler,
                return_address,
                pending.signo,
                pending.siginfo,
                saved_mask,
                saved_stack,
                pending.fault_address,
            )
        except GuestFault:
            # no room for the frame: Linux kills the process with SIGSEGV
            self.die(FatalSignal(signal.SIGSEGV, 0, sp))
            return
        new_mask = self.signals.mask | action.mask
        if not action.flags & SA_NODEFER:
            new_mask |= bit(pending.signo)
        self.signals.mask = new_mask & ~UNBLOCKABLE
        if action.flags & SA_RESETHAND:
            self.set_action(pending.signo, SigAction())

    def sigreturn(self) -> None:
        """rt_sigreturn: the context the frame at sp holds becomes the CPU's again."""
        from qemuser.syscalls.abi.sigframe import FRAMES

        sp = self.uc.reg_read(self.spec.sp)
        mask, stack = FRAMES[self.spec.name].pop(self.uc, self.mem, sp)
        self.signals.mask = mask & ~UNBLOCKABLE
        ss_sp, ss_flags, _pad, ss_size = struct.unpack("<QiiQ", stack)
        if not ss_flags & SS_ONSTACK:
            self.signals.alt_stack = (ss_sp, ss_flags & (SS_DISABLE | SS_AUTODISARM), ss_size)

    def ensure_sigreturn_trampoline(self) -> int:
        """A page holding `rt_sigreturn` for handlers without SA_RESTORER (the vDSO's job)."""
        from qemuser.syscalls.abi.sigframe import SIGRETURN_TRAMPOLINE

        if not self.sigreturn_trampoline:
            page = self.mem.find_free(self.spec.page_size)
            assert page is not None
            self.mem.map(page, self.spec.page_size, 5, "[vdso]")
            self.mem.write_init(page, SIGRETURN_TRAMPOLINE[self.spec.name])
            self.sigreturn_trampoline = page
        return self.sigreturn_trampoline

    def _fault_signal(self, exc: UcError) -> FatalSignal:
        """The signal Linux would send for the fault that stopped unicorn."""
        fault = self.mem.last_fault
        if fault is not None:
            code = 2 if fault.mapped else 1  # SEGV_ACCERR / SEGV_MAPERR
            address = fault.address
            if fault.access != UC_MEM_FETCH:
                address = self._exact_fault_address(fault.address) or address
            return FatalSignal(signal.SIGSEGV, code, address)
        pc = self.uc.reg_read(self.spec.pc)
        if self.spec.name == "riscv64" and self._is_ebreak(pc):
            # unicorn reports riscv's ebreak as an invalid instruction, pc at it
            return FatalSignal(signal.SIGTRAP, 1, pc)
        return FatalSignal(signal.SIGILL, 1, pc)

    def _is_ebreak(self, pc: int) -> bool:
        try:
            if int.from_bytes(self.mem.read(pc, 2), "little") == 0x9002:  # c.ebreak
                return True
            return self.mem.read_u32(pc) == 0x0010_0073
        except GuestFault:
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

    def die(self, sig: FatalSignal) -> None:
        self.exit.signal = sig.signo
        self.exit.core = sig.signo in DEFAULT_CORE

    def _on_interrupt_raw(self, _handle: int, intno: int, _data: int) -> None:
        try:
            if intno == self._trap_intno:
                values = self._regs.read()
                nr = values[0]
                raw = values[1:]
                if self.sched.multi:
                    sysdef = self.table.get(nr)
                    if sysdef is not None and sysdef.name in OFFLOADED:
                        self.sched.offload(nr, raw)
                        self.uc.emu_stop()
                        return
                result = self.dispatch(nr, raw)
                exit_state = self.exit
                if exit_state.status is not None or exit_state.signal is not None:
                    self.uc.emu_stop()
                    return
                if result is not None:  # None: the call set the registers itself
                    self._regs.write_result(result & MASK64)
                if self.signals.pending or self.sched.current.state != "runnable":
                    self.uc.emu_stop()  # the run loop delivers them / switches threads
                elif self.running_unsliced and (self.signal_bridge is not None or self.sched.multi):
                    # the call caught a signal or made a thread: the engine, started without
                    # slices, must come back to the loop now and then from here on
                    self.uc.emu_stop()
                return
            if (
                intno == 2
                and self.spec.name == "riscv64"
                and emulate_riscv_time_read(self.uc, self.uc.reg_read(self.spec.pc) - 4)
            ):
                return  # rdtime: unicorn has no time source; pc is already past it
            self.pending_fatal = self._trap_signal(intno)
            self.uc.emu_stop()
        except BaseException as exc:  # carried out of emu_start by run()
            self._hook_error = exc
            self.uc.emu_stop()

    def _trap_signal(self, intno: int) -> FatalSignal:
        """The signal for a trap unicorn reported by number; the pc is left at the trapping
        instruction, where Linux's signal frame has it."""
        pc = self.uc.reg_read(self.spec.pc)
        if self.spec.name == "aarch64":
            if intno == 7:  # BRK: SIGTRAP, TRAP_BRKPT
                return FatalSignal(signal.SIGTRAP, 1, pc)
            return FatalSignal(signal.SIGILL, 1, pc)  # ILL_ILLOPC
        # riscv64: unicorn has already stepped 4 past the trapping instruction
        pc -= 4
        self.uc.reg_write(self.spec.pc, pc)
        if intno == 3:  # ebreak: SIGTRAP, TRAP_BRKPT
            return FatalSignal(signal.SIGTRAP, 1, pc)
        if intno in (0, 1):  # instruction address misaligned / access fault
            return FatalSignal(signal.SIGSEGV, 1, pc)
        return FatalSignal(signal.SIGILL, 1, pc)

    # ---- system calls ----------------------------------------------------------------------

    def dispatch(self, nr: int, raw: tuple[int, ...]) -> int:
        sysdef = self.table.get(nr)
        if sysdef is None:
            self._report_unknown(nr, raw)
            return -errno.ENOSYS
        if sysdef.pending:  # the guest's first call of it: import its handler module
            sysdef = self.table[nr] = sysdef.resolve()
        strace = self.config.strace
        if strace and sysdef.ret == "none":
            self.log_line(format_call(self, sysdef, raw, None))
        try:
            result = sysdef.call(self, raw)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                result = self._interrupted(sysdef, raw)
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
            self.log_line(format_call(self, sysdef, raw, result))
        return result

    def _interrupted(self, sysdef: SyscallDef, raw: tuple[int, ...]) -> int | None:
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
            restart = action.flags & SA_RESTART and sysdef.name not in NEVER_RESTARTED
        else:
            restart = sysdef.name not in NEVER_RESTARTED or not pending
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
            self.log_line(format_unknown_call(self.pid, nr, self.names_by_number.get(nr), raw))

    def log_line(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    def request_exit(self, status: int) -> None:
        self.exit.status = status & 0xFF
        self.uc.emu_stop()
