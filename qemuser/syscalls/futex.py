"""futex(2): the waits and wakes glibc's mutexes, condition variables and joins are made of.

Two paths. A private futex (FUTEX_PRIVATE_FLAG), or a shared one on private memory, can only
be reached from this process: its waiters queue in the scheduler (qemuser.user.threads),
checked and queued between guest instructions. A shared futex on a MAP_SHARED page may be
reached from another process (LTP's checkpoints: a parent and its forked children on one shared
file mapping). Guest memory is host memory and a guest MAP_SHARED page is a host MAP_SHARED
page, so such a futex is the host kernel's own futex on the page's host address: the host
checks the word and sleeps atomically, and keys it by the page, as Linux keys the guest's. Its
waits run on the thread's worker (they may sleep; the other guest threads go on), and wakes
and requeues reach both the host's sleepers and the scheduler's queue.
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING

from qemuser.host.libc import UNMAPPED_HOST_ADDRESS, host_syscall
from qemuser.host.sysnums import HOST_SYS_FUTEX
from qemuser.loader.fault import GuestFault
from qemuser.loader.memory import PROT_READ, PROT_WRITE
from qemuser.syscalls.abi.timespec import TIMESPEC
from qemuser.syscalls.argkinds import PTR, ULONG, ArgKind
from qemuser.syscalls.registry import syscall
from qemuser.syscalls.sigstate import DEFAULT_IGNORE, SIG_DFL, SIG_IGN, bit
from qemuser.syscalls.sysnums import GENERIC

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

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
    def decode(self, proc: GuestProcess, raw: int) -> int:
        return raw & 0xFFFF_FFFF

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        op = raw & 0xFFFF_FFFF
        text = OP_NAMES.get(op & FUTEX_CMD_MASK, str(op & FUTEX_CMD_MASK))
        if op & FUTEX_PRIVATE_FLAG:
            text += "|FUTEX_PRIVATE_FLAG"
        if op & FUTEX_CLOCK_REALTIME:
            text += "|FUTEX_CLOCK_REALTIME"
        return text


def _deadline(proc: GuestProcess, timeout_ptr: int, absolute: bool, realtime: bool) -> float | None:
    """A monotonic deadline from a struct __kernel_timespec (relative for FUTEX_WAIT,
    absolute on the chosen clock for FUTEX_WAIT_BITSET)."""
    if not timeout_ptr:
        return None
    sec, nsec = TIMESPEC.unpack(proc.mem.read(timeout_ptr, TIMESPEC.size))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise OSError(errno.EINVAL, "bad timeout")
    value = sec + nsec / 1e9
    if not absolute:
        return time.monotonic() + value
    now = time.time() if realtime else time.monotonic()
    return time.monotonic() + (value - now)


def _wake_op(proc: GuestProcess, addr2: int, encoded: int) -> bool:
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


def _reachable(proc: GuestProcess, addr: int) -> bool:
    """Whether Linux can key a shared futex on `addr` (get_futex_key pins its page: a hole or a
    PROT_NONE page is EFAULT, even for a wake that reads nothing)."""
    m = proc.mem.find(addr)
    return m is not None and bool(m.prot & (PROT_READ | PROT_WRITE))


def _shared_word(proc: GuestProcess, addr: int, op: int) -> int | None:
    """The host address of a shared futex on a MAP_SHARED page, else None (the in-process
    path). The host faults the page in itself: past the end of the file it says EFAULT."""
    if op & FUTEX_PRIVATE_FLAG:
        return None
    m = proc.mem.find(addr)
    if m is None or not m.shared or m.host_address is None:
        return None
    return m.host_address + (addr - m.start)


def _sleep_alone(proc: GuestProcess, deadline: float | None) -> int:
    """A private wait of a process's only thread: nobody else can change the word, so it sleeps
    out the timeout (or forever, as Linux) unless a signal it takes comes; then EINTR goes to
    dispatch, which restarts the call or fails it as Linux would (cpuloop.interrupted)."""
    proc.ensure_signal_bridge()  # host signals must reach the pending queue
    sched = proc.sched
    thread = sched.running()
    while True:
        mask = sched.mask_of(thread)
        for pending in proc.signals.for_thread(thread.tid):
            if mask & bit(pending.signo):
                continue
            handler = proc.signals.action(pending.signo).handler
            if handler == SIG_IGN or (handler == SIG_DFL and pending.signo in DEFAULT_IGNORE):
                continue  # Linux does not wake a sleeper for a signal that does nothing
            if deadline is not None and handler != SIG_DFL:
                # a timed wait's restart block: a handler always turns it into EINTR
                return -errno.EINTR
            raise OSError(errno.EINTR, "interrupted by a signal")
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return -errno.ETIMEDOUT
        # a short nap: the Python handler that queues a host signal runs in between
        time.sleep(0.01 if left is None else min(left, 0.01))


def _host_pointer(proc: GuestProcess, address: int, size: int) -> int:
    """A guest pointer the host kernel reads (the timeout, a second futex word); an address
    the host refuses with EFAULT when the guest may not read it."""
    if not address:
        return 0
    try:
        return proc.mem.host_span(address, size, write=False) or UNMAPPED_HOST_ADDRESS
    except GuestFault:
        return UNMAPPED_HOST_ADDRESS


def _shared_futex(
    proc: GuestProcess,
    word: int,
    args: tuple[int, int, int, int, int, int],
) -> int | None:
    """A shared futex on a MAP_SHARED page: the host's futex on its host address. The
    layouts the host reads are the guest's (a 32-bit word; struct __kernel_timespec, two
    64-bit fields on x86_64 as on aarch64/riscv64), so the call goes through as it is."""
    addr, op, val, timeout, addr2, val3 = args
    cmd = op & FUTEX_CMD_MASK
    sched = proc.sched
    if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        if sched.multi and not sched.on_worker():
            # it may sleep: on this thread's worker, so that the other threads go on; the
            # worker runs this handler again and the host call there
            sched.offload(GENERIC["futex"], args)
            proc.uc.emu_stop()
            return None
        limit = _host_pointer(proc, timeout, TIMESPEC.size)
        return host_syscall(HOST_SYS_FUTEX, word, op, val, limit, 0, val3)
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        woken = host_syscall(HOST_SYS_FUTEX, word, op, val, 0, 0, val3)
        if woken < val:
            bitset = FUTEX_BITSET_MATCH_ANY if cmd == FUTEX_WAKE else val3 & 0xFFFF_FFFF
            woken += sched.futex_wake(addr, val - woken, bitset)
        return woken
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE, FUTEX_WAKE_OP):
        # the host checks *addr (CMP_REQUEUE) and does WAKE_OP's atomic update of *addr2
        # a shared word's host address, as its waiters' (else any host view of the guest's)
        target = _shared_word(proc, addr2, op) or _host_pointer(proc, addr2, 4)
        moved = host_syscall(HOST_SYS_FUTEX, word, op, val, timeout, target, val3)
        if cmd != FUTEX_WAKE_OP:
            moved += sched.futex_requeue(addr, val, timeout & 0x7FFF_FFFF, addr2)
        return moved
    # the PI calls and anything else: as the host answers (ENOSYS for an unknown op)
    return host_syscall(HOST_SYS_FUTEX, word, op, val, 0, 0, val3)


@syscall("futex", PTR, FutexOp(), ULONG, PTR, PTR, ULONG)
def futex(
    proc: GuestProcess, addr: int, op: int, val: int, timeout: int, addr2: int, val3: int
) -> int | None:
    cmd = op & FUTEX_CMD_MASK
    sched = proc.sched
    val &= 0xFFFF_FFFF
    if addr & 3:
        return -errno.EINVAL
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        # kernel/futex/requeue.c: negative counts are EINVAL before any address is looked at
        if val & 0x8000_0000 or timeout & 0x8000_0000:
            return -errno.EINVAL
    if not op & FUTEX_PRIVATE_FLAG:
        if not _reachable(proc, addr):
            return -errno.EFAULT
        if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE, FUTEX_WAKE_OP) and not _reachable(proc, addr2):
            return -errno.EFAULT
    word = _shared_word(proc, addr, op)
    if word is not None:
        return _shared_futex(proc, word, (addr, op, val, timeout, addr2, val3))
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
            return _sleep_alone(proc, deadline)
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
