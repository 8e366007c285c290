"""The user-mode runtime's shared vocabulary: how a guest ended, the signal its own
instruction raised, the sysroot's rule for paths, the request an execve of a foreign program
unwinds with, and what the runtime's modules see of the process (RuntimeProcess).

RuntimeProcess widens the handlers' GuestProcess (qemuser.syscalls.context) with what the
runtime itself uses: the loaded images and initial stack (/proc, -d, GDB), the CPU model, the
debugger hooks. qemuser.user.process.Process implements both; the modules below it (procfs,
debuglog, spawn, threads, the GDB target) are typed against this Protocol, so none of them
imports process.py and no import cycle forms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Protocol, TextIO

    from qemuser.cpu.exit_checks import ExitChecks
    from qemuser.cpu.spec import CpuModel
    from qemuser.loader.elf import LoadedImage
    from qemuser.loader.stack import InitialStack
    from qemuser.syscalls.context import GuestProcess
    from qemuser.syscalls.registry import SyscallDef
    from qemuser.user.config import RunConfig


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


if TYPE_CHECKING:  # a type only: nothing at run time needs the class (nor the start-up its
    # creation would cost); the modules that name it import it under TYPE_CHECKING too

    class RuntimeProcess(GuestProcess, Protocol):
        """A guest process as the runtime's own modules see it."""

        config: RunConfig  # the whole run configuration (execve of a foreign program copies it)
        log: TextIO  # where -strace and -d write (stderr, or -D's file)
        model: CpuModel
        exit: ExitState
        exit_checks: ExitChecks
        image: LoadedImage | None
        interp: LoadedImage | None
        stack: InitialStack | None
        debugger: object | None  # the GDB stub's session, when -g is given
        vfork_pipe_read: int | None

        def dispatch(self, nr: int, raw: tuple[int, ...]) -> int | None: ...
        def interrupted(self, sysdef: SyscallDef, raw: tuple[int, ...]) -> int | None: ...
        def write_result(self, value: int) -> None: ...
        def force_signal(self, fatal: FatalSignal) -> None: ...
        def resolve_exec_path(self, path: bytes) -> bytes: ...
        def on_fork_parent(self) -> None: ...
        def on_fork_child(self) -> None: ...
        def before_exec(self, native: bool) -> None: ...
