"""The handler modules that are imported on the guest's first call of one of theirs.

Importing every handler module costs a start-up ~15 ms that a short program (a hello, each
program a shell script starts) never uses: sockets, epoll, timers, signals, ioctl, threads. The
`@syscall` declarations in those modules stay the only declaration of each call; this index
only says where to find a call before its module is imported, and tests/unit/test_deferred.py
checks it against the declarations themselves, so it cannot drift.
"""

from __future__ import annotations

import importlib

from qemuser.syscalls.registry import REGISTRY, SyscallDef

# Imported before the guest's first instruction (by qemuser.syscalls.handlers): the calls that
# the start of nearly every program makes (ld.so, libc's initialisation, stdio).
EAGER_MODULES = ("fs", "misc", "mm", "proc", "clock")

# module -> the system calls it declares
DEFERRED_MODULES: dict[str, tuple[str, ...]] = {
    "events": (
        "epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2", "eventfd2",
        "inotify_add_watch", "inotify_init1", "inotify_rm_watch", "signalfd4", "timerfd_create",
        "timerfd_gettime", "timerfd_settime",
    ),
    "futex": ("futex",),
    "ioctl": ("ioctl",),
    "ipc": (
        "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
        "shmat", "shmctl", "shmdt", "shmget",
    ),
    "lifecycle": ("clone", "clone3", "execve", "execveat", "wait4", "waitid"),
    "mqueue": (
        "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink",
    ),
    "namespaces": ("kcmp", "mount", "setns", "umount2", "unshare"),
    "net": (
        "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
        "listen", "recvfrom", "recvmmsg", "recvmsg", "sendmmsg", "sendmsg", "sendto", "setsockopt",
        "shutdown", "socket", "socketpair",
    ),
    "poll": ("ppoll", "pselect6"),
    "scheduling": ("membarrier", "sched_getattr", "sched_setattr"),
    "signals": (
        "getitimer", "kill", "pidfd_getfd", "pidfd_open", "pidfd_send_signal",
        "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
        "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo", "setitimer",
        "sigaltstack", "tgkill", "tkill",
    ),
    "timers": (
        "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime",
    ),
}  # fmt: skip

MODULE_OF: dict[str, str] = {
    name: module for module, names in DEFERRED_MODULES.items() for name in names
}


class Deferred:
    """A dispatch-table entry whose handler module is not imported yet. Its name is all the
    scheduler looks at (to run blocking calls off the guest's thread); dispatch resolves it
    before anything else is needed."""

    __slots__ = ("name",)
    pending = True  # SyscallDef.pending is False: one test on the dispatch path

    def __init__(self, name: str) -> None:
        self.name = name

    def resolve(self) -> SyscallDef:
        import_module(MODULE_OF[self.name])
        return REGISTRY[self.name]


def import_module(module: str) -> None:
    importlib.import_module(f"qemuser.syscalls.{module}")


def import_all() -> None:
    """Every handler module: for whoever needs the whole registry at once."""
    for module in EAGER_MODULES + tuple(DEFERRED_MODULES):
        import_module(module)


def table_entry(name: str) -> SyscallDef | Deferred | None:
    """What the dispatch table holds for `name`: its declaration, a Deferred for a call whose
    module is not imported yet, None for a call nobody declares."""
    sysdef = REGISTRY.get(name)
    if sysdef is not None:
        return sysdef
    return Deferred(name) if name in MODULE_OF else None
