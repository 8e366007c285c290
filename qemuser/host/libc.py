"""The one binding of the host's libc, and the host calls made through it.

Every ctypes prototype we set lives here, on one CDLL object (`LIBC`): the memory calls the
address space uses (loader/memory.py, syscalls/mm.py), raw host system calls (`host_syscall`,
for calls Python has no wrapper for), and blocking calls made so that a signal interrupts them
as Linux would.

Python's own os.read, time.sleep, os.waitpid… retry by themselves when a signal interrupts
them (PEP 475), so a guest blocked in read() would never see EINTR. These wrappers call libc
directly: the host kernel decides whether the call was interrupted (no SA_RESTART on Python's
handlers), and EINTR comes back as OSError(EINTR), which dispatch turns into the guest's EINTR,
or into a restart when the guest's handler has SA_RESTART. A call that completed is never
reported as interrupted, whenever the signal arrives.
"""

from __future__ import annotations

import ctypes
import os

LIBC = ctypes.CDLL(None, use_errno=True)
_libc = LIBC

# The memory calls (loader/memory.py's address space, syscalls/mm.py's shared mappings).
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mremap.restype = ctypes.c_void_p
_libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
_libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

_libc.syscall.restype = ctypes.c_long

_libc.read.restype = ctypes.c_ssize_t
_libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_libc.write.restype = ctypes.c_ssize_t
_libc.write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
# The same calls on raw host addresses (guest memory is host memory: loader/memory.py), on
# every guest read/write. Without argtypes, as ctypes' per-argument conversion is most of a
# call's cost: the address goes as a c_void_p, fds and counts as C ints (counts are capped
# at MAX_RW_COUNT < 2**31; a C int is widened to the 64-bit size_t register as it is), the
# offset as a c_int64.
_read_into = _libc["read"]
_write_from = _libc["write"]
_pread_into = _libc["pread64"]
_pwrite_from = _libc["pwrite64"]
for _function in (_read_into, _write_from, _pread_into, _pwrite_from):
    _function.restype = ctypes.c_ssize_t
_address = ctypes.c_void_p
_offset = ctypes.c_int64
_libc.wait4.restype = ctypes.c_int
_libc.wait4.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_void_p]
_libc.clock_nanosleep.restype = ctypes.c_int
_libc.clock_nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]

RUSAGE_SIZE = 144  # struct rusage on x86_64: the guest's layout is the same (64-bit longs)


# An address no host mapping ever holds (the first page): given to the host in place of a
# guest pointer the guest may not access, so that the host kernel says EFAULT at the point of
# the call where Linux would (after its own checks of the other arguments).
UNMAPPED_HOST_ADDRESS = 8


def host_syscall(number: int, *args: object) -> int:
    """A raw host system call; OSError on failure.

    Arguments: ints (passed as long), bytes (a NUL-terminated char *), None (NULL), or ctypes
    objects (arrays, pointers) passed as they are.
    """
    converted = []
    for a in args:
        if isinstance(a, int):
            converted.append(ctypes.c_long(a))
        elif a is None:
            converted.append(ctypes.c_void_p(None))
        else:
            converted.append(a)
    result = _libc.syscall(ctypes.c_long(number), *converted)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _raise_errno() -> None:
    code = ctypes.get_errno()
    raise OSError(code, os.strerror(code))


def read(fd: int, size: int) -> bytes:
    buffer = ctypes.create_string_buffer(size)
    n = _libc.read(fd, buffer, size)
    if n < 0:
        _raise_errno()
    return buffer.raw[:n]


def write(fd: int, data: bytes) -> int:
    n = _libc.write(fd, data, len(data))
    if n < 0:
        _raise_errno()
    return n


def read_into(fd: int, host_address: int, size: int) -> int:
    """read(2) straight into host memory (a guest buffer; size < 2**31); the count read."""
    n = _read_into(fd, _address(host_address), size)
    if n < 0:
        _raise_errno()
    return n


def write_from(fd: int, host_address: int, size: int) -> int:
    """write(2) straight from host memory (a guest buffer); the count written."""
    n = _write_from(fd, _address(host_address), size)
    if n < 0:
        _raise_errno()
    return n


def pread_into(fd: int, host_address: int, size: int, offset: int) -> int:
    n = _pread_into(fd, _address(host_address), size, _offset(offset))
    if n < 0:
        _raise_errno()
    return n


def pwrite_from(fd: int, host_address: int, size: int, offset: int) -> int:
    n = _pwrite_from(fd, _address(host_address), size, _offset(offset))
    if n < 0:
        _raise_errno()
    return n


def wait4(pid: int, options: int) -> tuple[int, int, bytes]:
    """(pid, status, struct rusage bytes)."""
    status = ctypes.c_int(0)
    rusage = ctypes.create_string_buffer(RUSAGE_SIZE)
    child = _libc.wait4(pid, ctypes.byref(status), options, rusage)
    if child < 0:
        _raise_errno()
    return child, status.value, rusage.raw


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def clock_nanosleep(clock: int, absolute: bool, seconds: int, nanoseconds: int) -> tuple[int, int]:
    """Sleep; returns the remaining (seconds, nanoseconds) of a relative sleep (0, 0 when done).
    Raises OSError(EINTR) when a signal cut it short (the remainder is then on the error's
    `remaining` attribute)."""
    request = _Timespec(seconds, nanoseconds)
    remaining = _Timespec(0, 0)
    code = _libc.clock_nanosleep(
        clock, 1 if absolute else 0, ctypes.byref(request), ctypes.byref(remaining)
    )
    if code:
        error = OSError(code, os.strerror(code))
        error.remaining = (remaining.tv_sec, remaining.tv_nsec)  # type: ignore[attr-defined]
        raise error
    return 0, 0
