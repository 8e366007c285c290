"""Running one guest program to its end: the entry point every front end calls."""

from __future__ import annotations

import os
import signal

from qemuser.loader.elf import LoadError
from qemuser.syscalls import handlers  # noqa: F401  (fills the registry)
from qemuser.user.config import RunConfig
from qemuser.user.logstream import LogStream, file_log, flush_stdout, stderr_log
from qemuser.user.process import Process
from qemuser.user.runtime import ExecRequest, ExitState

SIGNAL_DESCRIPTIONS = {sig: signal.strsignal(sig) or sig.name for sig in signal.Signals}


def open_log(config: RunConfig) -> LogStream:
    if config.log_file:
        return file_log(config.log_file)
    return stderr_log()


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
        execed = previous is not None  # this program comes from the guest's execve
        if previous is not None:
            proc.inherit_from(previous)
            previous = None
        proc.log = log
        if log.owned:
            proc.host_fd_reserved.add(log.fileno())
        try:
            proc.load()
            if config.gdb is not None and previous_debugged is False:
                # after loading, as qemu-user: a program that cannot load fails first
                from qemuser.user.gdbtarget import GdbStub

                proc.debugger = GdbStub.open(config.gdb)
                previous_debugged = True
            state = proc.run()
        except LoadError as exc:
            if not (execed and exc.fatal):
                raise
            # Linux meets this one after execve's point of no return: the caller is gone
            # and the process dies of SIGSEGV (fs/exec.c bprm_execve)
            return finish(proc, ExitState(signal=signal.SIGSEGV, core=True))
        except ExecRequest as request:
            # execve of a foreign program: same host process, same pid, a new engine.
            if proc.debugger is not None:
                proc.debugger.disconnect()  # as the host's close-on-exec does to qemu's socket
            from qemuser.user.spawn import close_on_exec_fds  # loaded by the execve

            close_on_exec_fds(proc.host_fd_reserved)
            config = request.config
            previous = proc
            continue
        return finish(proc, state)


def finish(proc: Process, state: ExitState) -> int:
    flush_stdout()  # the front end may leave without the interpreter's teardown
    if state.signal is None:
        return state.status or 0
    sig = state.signal
    name = SIGNAL_DESCRIPTIONS.get(sig, str(sig))
    suffix = " - core dumped" if state.core else ""
    # on stderr even with -D, as qemu-user does (nowhere when stderr is closed)
    stderr_log().write(f"qemuser: uncaught target signal {sig} ({name}){suffix}\n")
    die_of_signal(sig)
    return 128 + sig  # not reached


def die_of_signal(sig: int) -> None:
    """End this host process by `sig`. A core-dumping signal dumps the emulator's core when
    RLIMIT_CORE (the guest's own, which setrlimit passes to the host) allows, as qemu-user
    does: the parent then sees WCOREDUMP and SIGCHLD's CLD_DUMPED as on Linux, and the
    shell says "(core dumped)". With the usual `ulimit -c 0` nothing is written."""
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)
