"""What a system call handler may touch of the guest process: `GuestProcess`.

Handlers are written against this Protocol, never against the runtime that implements it
(qemuser.user.process.Process): the list below is all a handler may read, call or change, and
adding to it is a decision about the runtime, not a handler's detail. The runtime's engine
loop, signal frames, scheduler internals and debugger stay out of reach. Types named here
come from below `syscalls/` (loader, cpu) or from `syscalls/` itself (sigstate, abi).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from unicorn import Uc

    from qemuser.cpu.spec import CpuSpec
    from qemuser.loader.memory import AddressSpace
    from qemuser.syscalls.abi.filecontrol import OpenFlagCodec
    from qemuser.syscalls.sigstate import SigAction, SignalFd, SignalState


class GuestConfig(Protocol):
    """The run's settings a handler reads (getrlimit's stack, unimp logging)."""

    @property
    def stack_size(self) -> int: ...
    @property
    def strace(self) -> bool: ...
    @property
    def log_items(self) -> frozenset[str]: ...


class LinuxFacts(Protocol):
    """The per-architecture Linux facts handlers need (qemuser.user.linux has them all)."""

    @property
    def task_size(self) -> int: ...
    @property
    def uname_machine(self) -> str: ...


class GuestThreadView(Protocol):
    """A guest thread as handlers see it: its tid and whether it is still alive."""

    @property
    def tid(self) -> int: ...
    @property
    def state(self) -> str: ...  # runnable | blocked | exited
    @property
    def parent_pid(self) -> int: ...  # a CLONE_VM child's guest parent, else 0


class GuestScheduler(Protocol):
    """The scheduler's calls a handler makes: futexes, rt_sigsuspend, signal masks."""

    @property
    def multi(self) -> bool: ...  # more than one guest thread: waits go through the scheduler
    @property
    def threads(self) -> Mapping[int, GuestThreadView]: ...
    def running(self) -> GuestThreadView: ...
    def mask_of(self, thread: Any) -> int: ...
    def on_worker(self) -> bool: ...
    def suspend(self) -> None: ...
    def offload(self, nr: int, raw: tuple[int, ...]) -> None: ...
    def futex_wait(self, address: int, bitset: int, deadline: float | None) -> None: ...
    def futex_wake(self, address: int, count: int, bitset: int = 0xFFFF_FFFF) -> int: ...
    def futex_requeue(self, address: int, wake: int, requeue: int, target: int) -> int: ...


class GuestProcess(Protocol):
    """The process a handler gets as its first argument."""

    # what runs it
    config: GuestConfig
    spec: CpuSpec
    linux: LinuxFacts
    uc: Uc  # registers (clone's child stack and TLS), emu_stop after a thread switch
    mem: AddressSpace
    sched: GuestScheduler
    # identity and per-process kernel state
    pid: int
    exe_path: str
    stack_low: int
    umask_value: int
    thread_name: bytes
    open_codec: OpenFlagCodec
    host_fd_reserved: set[int]  # host fds of ours the guest must not close or reuse
    # signals
    signals: SignalState
    signalfds: dict[int, SignalFd]
    posix_timers: dict[int, Any]  # timer id -> syscalls.timers.GuestTimer
    kernel_timer_signals: set[int]  # raised by armed setitimer timers (si_code SI_KERNEL)
    restore_mask_after_handler: int | None  # rt_sigsuspend's saved mask
    # the calling thread's own words (set_tid_address, set_robust_list)
    clear_child_tid: int
    robust_list: tuple[int, int]

    def host_path(self, path: bytes) -> bytes: ...
    def open_special(self, path: bytes, flags: int) -> int | None: ...
    @property
    def tid(self) -> int: ...
    def log_line(self, text: str) -> None: ...
    # life cycle
    def request_exit(self, status: int) -> None: ...
    def exit_thread(self, status: int) -> None: ...
    def spawn_thread(
        self, flags: int, child_stack: int, parent_tid: int, tls: int, child_tid: int
    ) -> int: ...
    def prepare_vfork(self) -> None: ...  # before fork() of a CLONE_VFORK child
    def fork(
        self, flags: int, child_stack: int, parent_tid: int, tls: int, child_tid: int
    ) -> int: ...
    def exec_program(self, path: bytes, argv: list[bytes], envp: list[bytes]) -> int: ...
    # signals
    def set_action(self, signo: int, action: SigAction) -> None: ...
    def set_mask(self, mask: int) -> None: ...
    def add_signalfd(self, read_end: int, write_end: int, mask: int) -> None: ...
    def ensure_signal_bridge(self) -> object: ...
    def sigreturn(self) -> None: ...
