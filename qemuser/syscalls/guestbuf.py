"""Guest buffers handed to a host call that reads or fills them, for the calls whose records
have the host's layout (the POSIX message queues, sched_attr, mount's strings): a host copy
of what the guest gave, or an address the host refuses with EFAULT at the point of the call
where Linux would."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

from qemuser.host.libc import UNMAPPED_HOST_ADDRESS
from qemuser.loader.fault import GuestFault

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess


def copy_in(proc: GuestProcess, address: int, size: int) -> ctypes.Array | int | None:
    """A host copy of guest [address, address+size): None for NULL, an unmapped host address
    when the guest may not read it."""
    if not address:
        return None
    try:
        return ctypes.create_string_buffer(proc.mem.read(address, size), size)
    except GuestFault:
        return UNMAPPED_HOST_ADDRESS


def out_buffer(proc: GuestProcess, address: int, size: int) -> ctypes.Array | int | None:
    """A host buffer for the host to fill and copy_out to write back (holding the guest's
    bytes first, so that what the host leaves alone stays as it was); an unmapped host address
    when the guest may not write there."""
    if not address:
        return None
    try:
        proc.mem.check_writable(address, size)
        return ctypes.create_string_buffer(proc.mem.read(address, size), size)
    except GuestFault:
        return UNMAPPED_HOST_ADDRESS


def copy_out(
    proc: GuestProcess, address: int, buffer: ctypes.Array | int | None, size: int
) -> None:
    """The first `size` bytes the host wrote in an out_buffer, back into guest memory."""
    if isinstance(buffer, ctypes.Array) and size > 0:
        proc.mem.write(address, buffer.raw[:size])
