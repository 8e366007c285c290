"""The host siginfo of the signals the guest handles: who sent them, and what with.

Python's signal handlers see only a signal's number, yet the guest's SA_SIGINFO handler must
see what Linux gives it: the sender's pid and uid, the si_code, rt_sigqueueinfo's and
pidfd_send_signal's si_value, F_SETSIG's si_fd and si_band; and a real-time signal sent twice
must arrive twice, where Python runs its handler once. Python's own C handler stays the one
that runs (it only notes the signal for the main thread, which is what async-signal safety
allows); in front of it, `handle(signo, handler)` puts a small x86_64 trampoline, installed with
SA_SIGINFO, that appends the kernel's siginfo to a ring of records and jumps on to Python's
handler, registers untouched but for scratch ones. The Python handler then takes every
record of its signal with `take(signo)`.

x86_64's siginfo_t is the generic 128-byte layout that aarch64 and riscv64 use too, so a
record goes to the guest byte for byte (the guest's pids and uids are the host's).

The ring holds the last 256 signals: more between two runs of Python's handler lose the
oldest. Records are written whole before Python code can run: the guest's signals reach the
main thread only (qemuser.host.signals), where a C handler always finishes first.
"""

from __future__ import annotations

import ctypes
import mmap
import signal
import struct
from typing import TYPE_CHECKING, Any

from qemuser.host.libc import LIBC

if TYPE_CHECKING:
    from collections.abc import Callable

SIGINFO_SIZE = 128
_RING = 256  # records (a power of two: the index is masked)
_SA_SIGINFO = 4
_PROT_READ, _PROT_EXEC = 1, 4
_PRIVATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS


class _Sigaction(ctypes.Structure):
    """glibc's x86_64 struct sigaction (bits/sigaction.h): what its sigaction() takes."""

    _fields_ = [
        ("handler", ctypes.c_void_p),
        ("mask", ctypes.c_ulong * 16),
        ("flags", ctypes.c_int),
        ("restorer", ctypes.c_void_p),
    ]


LIBC.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
LIBC.sigaction.restype = ctypes.c_int
LIBC.pthread_sigmask.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
LIBC.pthread_sigmask.restype = ctypes.c_int
LIBC.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
LIBC.mprotect.restype = ctypes.c_int


def _trampoline(counter: int, ring: int, handler: int) -> bytes:
    """handler(signo, info, uctx) for SA_SIGINFO: ring[counter++ % _RING] = *info (the slot
    taken with one locked add, so nested handlers never share one); then jump to `handler`
    with the same arguments (rdi, the number, is never touched; Python's handler takes only
    that one)."""
    copy_loop = (
        b"\x48\x8b\x06"  # mov rax, [rsi]
        b"\x48\x89\x01"  # mov [rcx], rax
        b"\x48\x83\xc6\x08"  # add rsi, 8
        b"\x48\x83\xc1\x08"  # add rcx, 8
        b"\x41\xff\xc8"  # dec r8d
    )
    back = -(len(copy_loop) + 2)  # jnz to the loop's start, from the jump's end
    return (
        b"\x48\xb9"
        + struct.pack("<Q", counter)  # movabs rcx, counter
        + b"\xb8\x01\x00\x00\x00"  # mov eax, 1
        + b"\xf0\x48\x0f\xc1\x01"  # lock xadd [rcx], rax: rax = the old count
        + b"\x25"
        + struct.pack("<I", _RING - 1)  # and eax, _RING - 1
        + b"\x48\xc1\xe0\x07"  # shl rax, 7 (128 bytes a record)
        + b"\x48\xb9"
        + struct.pack("<Q", ring)  # movabs rcx, ring
        + b"\x48\x01\xc1"  # add rcx, rax
        + b"\x41\xb8"
        + struct.pack("<I", SIGINFO_SIZE // 8)  # mov r8d, 16 (quadwords)
        + copy_loop
        + b"\x75"
        + struct.pack("<b", back)  # jnz loop
        + b"\x48\xb8"
        + struct.pack("<Q", handler)  # movabs rax, handler
        + b"\xff\xe0"  # jmp rax
    )


_GUARDED = 0x100  # offset of the guarded entry in the code page
_ZEROS = 0x180  # 32 zero bytes there: the kernel's struct sigaction of SIG_DFL


def _guarded_entry(code_address: int) -> bytes:
    """The entry for SIGSEGV, SIGBUS, SIGILL and SIGFPE, which may also be the emulator's own
    faults: one the kernel raised (si_code > 0) puts the default action back, with a raw
    rt_sigaction, and returns, so that the faulting instruction runs again and the emulator
    dies of it as it would have; one a process sent (kill, tgkill, sigqueue: si_code <= 0)
    goes to the plain entry at the page's start, for the guest."""
    back = -(_GUARDED + 4 + 2 + 5)  # jmp rel32 to the page's start, from the jump's end
    return (
        b"\x83\x7e\x08\x00"  # cmp dword [rsi+8], 0 (si_code)
        b"\x7f\x05"  # jg fault (over the next jump)
        + b"\xe9"
        + struct.pack("<i", back)  # jmp plain
        + b"\x48\xbe"
        + struct.pack("<Q", code_address + _ZEROS)  # fault: movabs rsi, SIG_DFL's sigaction
        + b"\x31\xd2"  # xor edx, edx (no old action)
        + b"\x41\xba\x08\x00\x00\x00"  # mov r10d, 8 (sigsetsize)
        + b"\xb8\x0d\x00\x00\x00"  # mov eax, 13 (rt_sigaction; rdi is still signo)
        + b"\x0f\x05"  # syscall
        + b"\xc3"  # ret: the kernel restarts the faulting instruction, now fatal
    )


class _Capture:
    def __init__(self) -> None:
        # the count of records ever written (8 bytes), then the ring
        # private: a forked child has a ring of its own (Python's default is MAP_SHARED)
        self.memory = mmap.mmap(-1, 8 + _RING * SIGINFO_SIZE, flags=_PRIVATE)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.memory))
        self.read = 0  # the count up to which records were taken out of the ring
        self.taken: dict[int, list[bytes]] = {}  # records out of the ring, by signal
        self.installed: set[int] = set()
        self.code: mmap.mmap | None = None
        self.code_address = 0
        self.python_handler = 0

    def install(self, signo: int, guarded: bool) -> bool:
        current = _Sigaction()
        if LIBC.sigaction(signo, None, ctypes.byref(current)) != 0 or not current.handler:
            return False
        entry_offset = _GUARDED if guarded else 0
        if self.code_address and current.handler == self.code_address + entry_offset:
            return True  # already ours
        if current.handler in (int(signal.SIG_DFL), int(signal.SIG_IGN)):
            return False
        if self.code is None:
            self.python_handler = current.handler
            code = _trampoline(self.address, self.address + 8, current.handler)
            self.code = mmap.mmap(-1, mmap.PAGESIZE, flags=_PRIVATE)
            self.code.write(code)
            self.code_address = ctypes.addressof(ctypes.c_char.from_buffer(self.code))
            assert len(code) <= _GUARDED
            guarded_code = _guarded_entry(self.code_address)
            self.code[_GUARDED : _GUARDED + len(guarded_code)] = guarded_code
            if LIBC.mprotect(self.code_address, mmap.PAGESIZE, _PROT_READ | _PROT_EXEC) != 0:
                self.code_address = 0
                return False
        elif current.handler != self.python_handler:
            return False  # not Python's handler: leave it alone
        if not self.code_address:
            return False
        ours = _Sigaction()
        ours.handler = self.code_address + entry_offset
        ctypes.memmove(ours.mask, current.mask, ctypes.sizeof(ours.mask))
        ours.flags = current.flags | _SA_SIGINFO
        if LIBC.sigaction(signo, ctypes.byref(ours), None) != 0:
            return False
        self.installed.add(signo)
        return True

    def take(self, signo: int) -> list[bytes]:
        written = struct.unpack_from("<Q", self.memory, 0)[0]
        for count in range(max(self.read, written - _RING), written):
            start = 8 + (count % _RING) * SIGINFO_SIZE
            record = self.memory[start : start + SIGINFO_SIZE]
            self.taken.setdefault(struct.unpack_from("<i", record)[0], []).append(record)
        self.read = written
        return self.taken.pop(signo, [])


_capture: _Capture | None = None


def handle(signo: int, handler: Callable[[int, Any], None], guarded: bool = False) -> None:
    """signal.signal(signo, handler), the siginfo of every host `signo` recorded from then on
    (when the trampoline cannot be put in front, its records stay unknown: `captured` says).
    The signal is blocked meanwhile: one that came between Python's handler going in and the
    trampoline would run the handler with no record. OSError and ValueError as signal.signal.
    `guarded`: for a signal that is also one of the emulator's own faults (_guarded_entry).
    """
    global _capture
    if _capture is not None and signo in _capture.installed:
        if signal.getsignal(signo) is handler:
            return  # as it is: signal.signal would only put Python's C handler back
    # libc's own call: Python's pthread_sigmask() warns about the old mask's glibc-internal
    # signals (32, 33) as it converts it
    block = (ctypes.c_ulong * 16)()
    block[0] = 1 << (signo - 1)
    old = (ctypes.c_ulong * 16)()
    LIBC.pthread_sigmask(signal.SIG_BLOCK, block, old)
    try:
        signal.signal(signo, handler)
        if _capture is None:
            _capture = _Capture()
        if not _capture.install(signo, guarded):
            _capture.installed.discard(signo)
    finally:
        LIBC.pthread_sigmask(signal.SIG_SETMASK, old, None)


def captured(signo: int) -> bool:
    """Whether the records of `signo` are kept: if so, `take` finding none means that the
    records of this run of the handler were taken by an earlier run (a signal that came
    while that one ran), not that one is missing."""
    return _capture is not None and signo in _capture.installed


def take(signo: int) -> list[bytes]:
    """The siginfo of each host `signo` that came since the last call, oldest first."""
    if _capture is None:
        return []
    return _capture.take(signo)
