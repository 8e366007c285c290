"""A guest process: its CPU, address space, files, threads, signals, and how it loads.

`Process` is what the handlers get (it implements qemuser.syscalls.context.GuestProcess) and
what the runtime's modules see (qemuser.user.runtime.RuntimeProcess). It is made of its state
and life cycle (here), its CPU loop (qemuser.user.cpuloop.CpuLoop: the run loop, traps,
dispatch) and its signal delivery (qemuser.user.signals.SignalDelivery); fork and execve are
qemuser.user.spawn's, the scheduler qemuser.user.threads's.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from unicorn import Uc

from qemuser.cpu import CPUS, CpuModel, CpuSpec
from qemuser.cpu.exit_checks import ExitChecks
from qemuser.cpu.properties import CpuOptionError, parse_properties, split_cpu_option
from qemuser.host.signals import HOST_RESERVED
from qemuser.loader.elf import (
    ElfInfo,
    LoadedImage,
    LoadError,
    check_arch,
    load_image,
    read_elf_info,
)
from qemuser.loader.memory import AddressSpace, GuestFault
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
from qemuser.syscalls.abi.filecontrol import OpenFlagCodec
from qemuser.syscalls.argkinds import MASK64
from qemuser.syscalls.deferred import Deferred, table_entry
from qemuser.syscalls.registry import SyscallDef
from qemuser.syscalls.sigstate import (
    SIG_DFL,
    SIG_IGN,
    SigAction,
    SignalFd,
    SignalState,
    bit,
)
from qemuser.syscalls.sysnums import numbers_for
from qemuser.user.config import RunConfig
from qemuser.user.cpuloop import CpuLoop, SyscallRegisters, add_raw_interrupt_hook
from qemuser.user.linux import LINUX_ARCHES, LinuxArch, hwcaps
from qemuser.user.logstream import LogStream, stderr_log
from qemuser.user.runtime import ExitState, FatalSignal, host_path_in
from qemuser.user.signals import HostSignalBridge, SignalDelivery
from qemuser.user.threads import Scheduler

if TYPE_CHECKING:
    from qemuser.user.gdbtarget import GdbStub

AT_FLAGS_PRESERVE_ARGV0 = 1
# The most of a -s stack mapped at start (see _setup_stack): beyond it the engine may fail to
# back the mapping, depending on the host's memory.
STACK_MAPPED_MAX = 4 << 30


# repr=False too: a Process's repr would dump the engine, memory and tables, and compiling it
# costs every start.
@dataclass(eq=False, repr=False)
class Process(CpuLoop, SignalDelivery):
    """One guest program in this host process: engine, memory, files, signals, threads."""

    config: RunConfig
    spec: CpuSpec = field(init=False)
    model: CpuModel = field(init=False)
    linux: LinuxArch = field(init=False)
    uc: Uc = field(init=False)
    mem: AddressSpace = field(init=False)
    table: dict[int, SyscallDef] = field(init=False)
    exit: ExitState = field(default_factory=ExitState)
    log: LogStream = field(default_factory=stderr_log)
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
        # -cpu MODEL,NAME=VALUE,...: checked by the front end (qemuser.cpu.properties)
        model_name, property_items = split_cpu_option(self.config.cpu_model or "")
        try:
            self.model = self.spec.model(model_name or None)
            cpu_properties = parse_properties(self.spec.name, self.model.name, property_items)
        except (KeyError, CpuOptionError):
            raise LoadError(
                f"unknown CPU model '{self.config.cpu_model}' for {self.spec.name} (try -cpu help)"
            ) from None
        self.linux = LINUX_ARCHES[self.spec.name]
        self.uc = self.spec.new_engine(self.model)
        self.linux.prepare_engine(self.uc)
        # user mode never stops the guest from a memory hook, except in the fault replay below
        self.exit_checks = ExitChecks(self.uc)
        if cpu_properties.get("c") is False:
            from qemuser.user.nocompressed import enforce_no_compressed

            enforce_no_compressed(self)  # it needs the checks (see there)
            self.stops_between_blocks = False
        else:
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
        from qemuser.user.procfs import synthetic_file

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
        # a child starts with no signal pending (Linux's copy_process; vfork02), and no
        # record of its parent's timer signals
        with self.signals.lock:
            self.signals.pending.clear()
        self.signals.timers_in_flight.clear()
        self.signals.timer_overruns.clear()
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
            elif action.handler == SIG_IGN and signo not in HOST_RESERVED:
                try:  # caught while blocked (to be queued): ignored again on the host
                    signal.signal(signo, signal.SIG_IGN)
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

    def fork(self, flags: int, child_stack: int, parent_tid: int, tls: int, child_tid: int) -> int:
        """clone() of a process (fork, vfork): the child's pid here, 0 in the child."""
        from qemuser.user import spawn  # with the first fork: most programs never fork

        return spawn.fork_process(self, flags, child_stack, parent_tid, tls, child_tid)

    def exec_program(self, path: bytes, argv: list[bytes], envp: list[bytes]) -> int:
        """execve: -errno on failure; on success it does not return (ExecRequest, or the
        host's execve of a native program)."""
        from qemuser.user import spawn

        return spawn.exec_program(self, path, argv, envp)

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
        if not flags & 0x10000:  # no CLONE_THREAD: a process of its own on Linux (clone02)
            creator = self.sched.running()  # itself such a child, or the process's thread
            creator_pid = creator.tid if creator.parent_pid else os.getpid()
            creator_parent = creator.parent_pid or os.getppid()
            thread.parent_pid = creator_parent if flags & 0x8000 else creator_pid  # CLONE_PARENT
        return thread.tid

    # ---- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        cfg = self.config
        info = read_elf_info(cfg.program, cfg.exec_fd)
        check_arch(info, self.spec)
        self.exe_path = os.path.abspath(cfg.program)
        data = self._read_file(cfg.program, cfg.exec_fd)
        # mmap() space starts below the stack, as Linux's mmap_base is STACK_TOP less the
        # stack's rlimit: a large -s moves it down instead of mapping the stack over it
        stack_floor = self.linux.stack_top - self._stack_mapping_size() - self.spec.page_size
        self.mem.mmap_top = min(self.linux.mmap_top, stack_floor)
        base_hint = self.linux.pie_base if info.etype == "ET_DYN" else None
        name = self.exe_path
        self.image = load_image(
            self.mem, info, data, base_hint, name, task_size=self.linux.task_size
        )
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
                self.mem,
                interp_info,
                interp_data,
                None,
                os.path.abspath(interp_info.path),
                task_size=self.linux.task_size,
            )
            entry = self.interp.entry
        self._setup_brk(self.image)
        self._setup_stack(info)
        self.uc.reg_write(self.spec.pc, entry)
        self.entry = entry
        if self.config.log_items:
            from qemuser.user.debuglog import install_logging

            install_logging(self)

    @staticmethod
    def _read_file(path: str, fd: int | None) -> bytes:
        if fd is not None:
            return os.pread(fd, os.fstat(fd).st_size, 0)
        with open(path, "rb") as f:
            return f.read()

    def _setup_brk(self, image: LoadedImage) -> None:
        self.mem.brk_start = self.mem.brk = image.end

    def _stack_mapping_size(self) -> int:
        """How much of the -s stack is mapped at start. qemu-user's floor: never less than 32
        pages. Linux maps only what the arguments need and grows the stack on faults up to
        RLIMIT_STACK; qemuser's stack does not grow, so it maps it whole at start, but at most
        STACK_MAPPED_MAX: `-s 1T` is the guest's RLIMIT_STACK (getrlimit shows it) while the
        mapping is what the host can back."""
        mapped = min(self.config.stack_size, STACK_MAPPED_MAX)
        return max(self.mem.page_align(mapped), 32 * self.spec.page_size)

    def _setup_stack(self, info: ElfInfo) -> None:
        cfg = self.config
        top = self.linux.stack_top
        size = self._stack_mapping_size()
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

    def log_line(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    def request_exit(self, status: int) -> None:
        self.exit.status = status & 0xFF
        self.uc.emu_stop()
