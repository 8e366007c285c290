"""Running one guest program to its end: the entry point every front end calls."""

from __future__ import annotations

import os
import resource
import signal
import sys

from qemuser.syscalls import handlers  # noqa: F401  (fills the registry)
from qemuser.syscalls.config import RunConfig
from qemuser.syscalls.process import ExecRequest, ExitState, Process

SIGNAL_DESCRIPTIONS = {sig: signal.strsignal(sig) or sig.name for sig in signal.Signals}


def open_log(config: RunConfig):
    if config.log_file:
        return open(config.log_file, "w", buffering=1)  # noqa: SIM115  (qemu empties it too)
    return sys.stderr


def run(config: RunConfig) -> int:
    """Load and run the guest. Returns its exit status; when the guest dies of a signal,
    this process dies of the same signal (after qemu-user's message), as a shell expects.
    Raises LoadError for programs that cannot be loaded."""
    # A guest with default dispositions dies of SIGPIPE and SIGINT as a native program does
    # (Python ignores the first and turns the second into an exception).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    log = open_log(config)
    previous: Process | None = None
    previous_debugged = False  # -g debugs the first program; one it execs runs undebugged
    while True:
        proc = Process(config)
        if previous is not None:
            proc.inherit_from(previous)
            previous = None
        proc.log = log
        if log is not sys.stderr:
            proc.host_fd_reserved.add(log.fileno())
        try:
            proc.load()
            if config.gdb is not None and previous_debugged is False:
                # after loading, as qemu-user: a program that cannot load fails first
                from qemuser.syscalls.gdbstub import GdbStub

                proc.debugger = GdbStub.open(config.gdb)
                previous_debugged = True
            state = proc.run()
        except ExecRequest as request:
            # execve of a foreign program: same host process, same pid, a new engine.
            if proc.debugger is not None:
                proc.debugger.disconnect()  # as the host's close-on-exec does to qemu's socket
            from qemuser.syscalls.lifecycle import close_on_exec_fds  # imported by execve

            close_on_exec_fds(proc.host_fd_reserved)
            config = request.config
            previous = proc
            continue
        return finish(proc, state)


def finish(proc: Process, state: ExitState) -> int:
    sys.stdout.flush()
    proc.log.flush()  # the front end may leave without the interpreter's teardown
    if state.signal is None:
        return state.status or 0
    sig = state.signal
    name = SIGNAL_DESCRIPTIONS.get(sig, str(sig))
    suffix = " - core dumped" if state.core else ""
    # on stderr even with -D, as qemu-user does
    proc.log.flush()
    sys.stderr.write(f"qemuser: uncaught target signal {sig} ({name}){suffix}\n")
    sys.stderr.flush()
    die_of_signal(sig)
    return 128 + sig  # not reached


def die_of_signal(sig: int) -> None:
    """End this host process by `sig`, without a host core dump of the emulator."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)
