"""futex(2): the waits and wakes glibc's mutexes, condition variables and joins are made of."""

from __future__ import annotations

import errno
import struct
import time

from qemuser.syscalls.process import Process
from qemuser.syscalls.registry import PTR, ULONG, ArgKind, syscall

FUTEX_WAIT = 0
FUTEX_WAKE = 1
FUTEX_FD = 2
FUTEX_REQUEUE = 3
FUTEX_CMP_REQUEUE = 4
FUTEX_WAKE_OP = 5
FUTEX_LOCK_PI = 6
FUTEX_UNLOCK_PI = 7
FUTEX_TRYLOCK_PI = 8
FUTEX_WAIT_BITSET = 9
FUTEX_WAKE_BITSET = 10
FUTEX_PRIVATE_FLAG = 128
FUTEX_CLOCK_REALTIME = 256
FUTEX_CMD_MASK = ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
FUTEX_BITSET_MATCH_ANY = 0xFFFF_FFFF

OP_NAMES = {
    FUTEX_WAIT: "FUTEX_WAIT",
    FUTEX_WAKE: "FUTEX_WAKE",
    FUTEX_FD: "FUTEX_FD",
    FUTEX_REQUEUE: "FUTEX_REQUEUE",
    FUTEX_CMP_REQUEUE: "FUTEX_CMP_REQUEUE",
    FUTEX_WAKE_OP: "FUTEX_WAKE_OP",
    FUTEX_LOCK_PI: "FUTEX_LOCK_PI",
    FUTEX_UNLOCK_PI: "FUTEX_UNLOCK_PI",
    FUTEX_TRYLOCK_PI: "FUTEX_TRYLOCK_PI",
    FUTEX_WAIT_BITSET: "FUTEX_WAIT_BITSET",
    FUTEX_WAKE_BITSET: "FUTEX_WAKE_BITSET",
}


class FutexOp(ArgKind):
    def decode(self, proc: Process, raw: int) -> int:
        return raw & 0xFFFF_FFFF

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
        op = raw & 0xFFFF_FFFF
        text = OP_NAMES.get(op & FUTEX_CMD_MASK, str(op & FUTEX_CMD_MASK))
        if op & FUTEX_PRIVATE_FLAG:
            text += "|FUTEX_PRIVATE_FLAG"
        if op & FUTEX_CLOCK_REALTIME:
            text += "|FUTEX_CLOCK_REALTIME"
        return text


def _deadline(proc: Process, timeout_ptr: int, absolute: bool, realtime: bool) -> float | None:
    """A monotonic deadline from a struct __kernel_timespec (relative for FUTEX_WAIT,
    absolute on the chosen clock for FUTEX_WAIT_BITSET)."""
    if not timeout_ptr:
        return None
    sec, nsec = struct.unpack("<qq", proc.mem.read(timeout_ptr, 16))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise OSError(errno.EINVAL, "bad timeout")
    value = sec + nsec / 1e9
    if not absolute:
        return time.monotonic() + value
    now = time.time() if realtime else time.monotonic()
    return time.monotonic() + (value - now)


def _wake_op(proc: Process, addr2: int, encoded: int) -> bool:
    """FUTEX_WAKE_OP's read-modify-write of *addr2 and its comparison (linux/futex.h)."""
    op = (encoded >> 28) & 7
    cmp = (encoded >> 24) & 15
    oparg = (encoded >> 12) & 0xFFF
    cmparg = encoded & 0xFFF
    if encoded >> 31:  # FUTEX_OP_OPARG_SHIFT
        oparg = 1 << (oparg & 31)
    old = proc.mem.read_u32(addr2)
    new = {0: oparg, 1: old + oparg, 2: old | oparg, 3: old & ~oparg, 4: old ^ oparg}.get(op)
    if new is None:
        raise OSError(errno.ENOSYS, "bad futex op")
    proc.mem.write_u32(addr2, new)
    signed_old = old - (1 << 32) if old & 0x8000_0000 else old
    return {
        0: signed_old == cmparg,
        1: signed_old != cmparg,
        2: signed_old < cmparg,
        3: signed_old <= cmparg,
        4: signed_old > cmparg,
        5: signed_old >= cmparg,
    }.get(cmp, False)


@syscall("futex", PTR, FutexOp(), ULONG, PTR, PTR, ULONG)
def futex(
    proc: Process, addr: int, op: int, val: int, timeout: int, addr2: int, val3: int
) -> int | None:
    cmd = op & FUTEX_CMD_MASK
    sched = proc.sched
    val &= 0xFFFF_FFFF
    if addr & 3:
        return -errno.EINVAL
    if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        bitset = FUTEX_BITSET_MATCH_ANY if cmd == FUTEX_WAIT else val3 & 0xFFFF_FFFF
        if bitset == 0:
            return -errno.EINVAL
        deadline = _deadline(
            proc, timeout, cmd == FUTEX_WAIT_BITSET, bool(op & FUTEX_CLOCK_REALTIME)
        )
        if proc.mem.read_u32(addr) != val:
            return -errno.EAGAIN
        if not sched.multi:
            # nobody else can change the word: sleep out the timeout, or forever (as Linux)
            if deadline is None:
                while True:
                    time.sleep(3600)
            time.sleep(max(deadline - time.monotonic(), 0))
            return -errno.ETIMEDOUT
        sched.futex_wait(addr, bitset, deadline)
        return None  # the result is written when the thread is woken
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        bitset = FUTEX_BITSET_MATCH_ANY if cmd == FUTEX_WAKE else val3 & 0xFFFF_FFFF
        if bitset == 0:
            return -errno.EINVAL
        return sched.futex_wake(addr, val, bitset)
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        if cmd == FUTEX_CMP_REQUEUE and proc.mem.read_u32(addr) != val3 & 0xFFFF_FFFF:
            return -errno.EAGAIN
        return sched.futex_requeue(addr, val, timeout & 0x7FFF_FFFF, addr2)
    if cmd == FUTEX_WAKE_OP:
        woken = sched.futex_wake(addr, val)
        if _wake_op(proc, addr2, val3 & 0xFFFF_FFFF):
            woken += sched.futex_wake(addr2, timeout & 0x7FFF_FFFF)
        return woken
    return -errno.ENOSYS
