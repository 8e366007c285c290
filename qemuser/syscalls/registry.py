"""One registry of system calls: each handler is declared once, with its name, argument kinds
and every fact about the call (whether it blocks, whether SA_RESTART restarts it).

The same declaration drives dispatch (decoding arguments for the handler) and -strace (printing
them, qemuser.syscalls.strace). Handlers take the process (qemuser.syscalls.context.GuestProcess)
and the decoded arguments and return an int result; an OSError becomes -errno and a GuestFault
-EFAULT, in the runtime's dispatch alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qemuser.syscalls.argkinds import ArgKind, Int, Ret

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess


def _decode_int(proc: GuestProcess, raw: int) -> int:
    """Int.decode without its method call (the most common argument kind, on every call)."""
    return ((raw + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000


def _same(proc: GuestProcess, raw: int) -> int:
    return raw


def _caller(
    handler: Callable[..., int], kinds: tuple[ArgKind, ...]
) -> Callable[[GuestProcess, tuple[int, ...]], int]:
    """handler(proc, *decoded arguments) from the raw argument registers, with as little
    Python per call as the kinds allow: this runs on every system call."""
    count = len(kinds)
    decoders: list[Callable[[GuestProcess, int], Any]] = []
    for kind in kinds:
        decode = type(kind).decode
        if decode is ArgKind.decode:
            decoders.append(_same)  # the raw value as it is
        elif decode is Int.decode:
            decoders.append(_decode_int)
        else:
            decoders.append(kind.decode)
    if all(decoder is _same for decoder in decoders):
        # the raw values as they are: spelled out for the short lists, without the slice
        if count == 0:
            return lambda proc, raw: handler(proc)
        if count == 1:
            return lambda proc, raw: handler(proc, raw[0])
        if count == 2:
            return lambda proc, raw: handler(proc, raw[0], raw[1])
        return lambda proc, raw: handler(proc, *raw[:count])
    if all(decoder is _same for decoder in decoders[1:]):  # read(fd, buf, count), close(fd)
        first = decoders[0]
        return lambda proc, raw: handler(proc, first(proc, raw[0]), *raw[1:count])
    # spelled out for other short argument lists (lseek, fcntl, openat's neighbours)
    if count == 1:
        (d0,) = decoders
        return lambda proc, raw: handler(proc, d0(proc, raw[0]))
    if count == 2:
        d0, d1 = decoders
        return lambda proc, raw: handler(proc, d0(proc, raw[0]), d1(proc, raw[1]))
    if count == 3:
        d0, d1, d2 = decoders
        return lambda proc, raw: handler(proc, d0(proc, raw[0]), d1(proc, raw[1]), d2(proc, raw[2]))
    # longer lists (futex, mmap, ppoll...): decode only the arguments that need it
    steps = tuple((i, decoder) for i, decoder in enumerate(decoders) if decoder is not _same)

    def call(proc: GuestProcess, raw: tuple[int, ...]) -> int:
        values = list(raw[:count])
        for i, decoder in steps:
            values[i] = decoder(proc, values[i])
        return handler(proc, *values)

    return call


# eq=False: compared by identity only; every start would compile the generated __eq__.
@dataclass(frozen=True, eq=False)
class SyscallDef:
    """One declared system call: its handler, argument kinds and result kind."""

    name: str
    handler: Callable[..., int]
    args: tuple[ArgKind, ...]
    ret: str = Ret.INT
    # may sleep in the host: with several guest threads, it runs on the calling thread's own
    # host thread so that the others go on (qemuser.user.threads)
    blocks: bool = False
    # restarted after a signal handler with SA_RESTART (and after a signal no handler takes);
    # False for the calls man 7 signal lists as never restarted: they fail with EINTR
    restart: bool = True
    # handler(proc, *decoded args) from the raw argument registers (what dispatch calls)
    call: Callable[[GuestProcess, tuple[int, ...]], int] = field(
        init=False, repr=False, compare=False
    )
    pending = False  # a declaration, not a deferred.Deferred still to be imported

    def __post_init__(self) -> None:
        object.__setattr__(self, "call", _caller(self.handler, self.args))


REGISTRY: dict[str, SyscallDef] = {}


def syscall(
    name: str, *args: ArgKind, ret: str = Ret.INT, blocks: bool = False, restart: bool = True
) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Declare the handler of system call `name` with the kinds of its arguments and the
    facts about the call (see SyscallDef)."""

    def register(handler: Callable[..., int]) -> Callable[..., int]:
        if name in REGISTRY:
            raise ValueError(f"syscall {name} declared twice")
        REGISTRY[name] = SyscallDef(name, handler, args, ret, blocks, restart)
        return handler

    return register
