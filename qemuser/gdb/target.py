"""What the GDB protocol needs of the thing it debugs: `Target`.

The session (qemuser.gdb.session) speaks the protocol; a target gives it registers, memory,
breakpoints and watchpoints, and says who it is. User mode's target is a guest process
(qemuser.user.gdbtarget); system mode plugs in its own. Optional features (the auxiliary
vector, the program's file name, the target's files through vFile) are methods that return
None, or a `files` attribute that is None, where the target has none: the session then leaves
them out of qSupported and answers their packets with the empty reply.

A target of several threads (system mode's vCPUs, qemuser.system.gdbstub) also has
`thread_ids() -> list[int]`, `current_thread() -> int`, `select_thread(tid) -> bool` (Hg/Hc;
-1 and 0 keep the choice) and `thread_extra(tid) -> bytes`; a target with an MMU has
`set_physical_memory(bool)` and `physical` (QEMU's Qqemu.PhyMemMode). The session looks for
them with getattr: user mode's target has none and is served as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn, Protocol

if TYPE_CHECKING:
    from qemuser.gdb.tdesc import TargetDescription

# Z/z packet kinds (GDB manual, "Packets"): 0 software and 1 hardware breakpoint, 2 write,
# 3 read and 4 access watchpoint.
BREAKPOINT_KINDS = (0, 1)
WATCHPOINT_KINDS = (2, 3, 4)


class TargetFiles(Protocol):
    """The target's own files, as vFile opens them (read-only)."""

    def open(self, path: bytes) -> int: ...  # a host fd; OSError as the target would fail
    def readlink(self, path: bytes) -> bytes: ...
    def forget(self, fd: int) -> None: ...  # the session closed a file it opened


class Target(Protocol):
    """A debugged thing. Its methods raise ValueError for a register or value it cannot take
    (the session answers E16), and never let an engine's own error out."""

    description: TargetDescription
    files: TargetFiles | None

    @property
    def pid(self) -> int: ...  # the process id GDB sees with multiprocess ids
    @property
    def thread_name(self) -> bytes: ...

    # registers, numbered as in the description
    def read_registers(self) -> list[int]: ...
    def read_register(self, number: int) -> int: ...
    def write_register(self, number: int, value: int) -> None: ...
    def set_pc(self, address: int) -> None: ...

    # memory: None / False for an address the target cannot reach
    def read_memory(self, address: int, length: int) -> bytes | None: ...
    def write_memory(self, address: int, data: bytes) -> bool: ...

    # breakpoints and watchpoints (kinds as above); False for a kind it does not support
    def insert_point(self, kind: int, address: int, length: int) -> bool: ...
    def remove_point(self, kind: int, address: int, length: int) -> bool: ...
    def watch_hit(self) -> tuple[int, int] | None: ...  # (kind, address) of the last stop

    # optional features
    def auxv(self) -> bytes | None: ...
    def exec_file(self) -> bytes | None: ...

    def kill(self) -> NoReturn: ...
    def reserve_fd(self, fd: int, reserved: bool) -> None: ...  # host fds of the session's
