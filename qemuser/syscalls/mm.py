"""Memory management: brk, mmap, munmap, mprotect, mremap, madvise, msync, mlock."""

from __future__ import annotations

import bisect
import ctypes
import errno
import mmap as host_mmap
import os
import stat as host_stat
import weakref
from typing import TYPE_CHECKING

from qemuser.host import libc as host_libc
from qemuser.host.libc import LIBC, host_syscall
from qemuser.host.sysnums import (
    HOST_SYS_MADVISE,
    HOST_SYS_MINCORE,
    HOST_SYS_MLOCK,
    HOST_SYS_MSYNC,
    HOST_SYS_MUNLOCK,
)
from qemuser.loader.memory import (
    MIN_MAP_ADDRESS,
    AddressSpace,
    file_end_of,
    host_private_pages,
)
from qemuser.syscalls.argkinds import LONG, MAYBE_FD, PTR, ULONG, Enum, Flags, Ret, guest_fd
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

PROT_NAMES = {1: "PROT_READ", 2: "PROT_WRITE", 4: "PROT_EXEC", 0x10: "PROT_BTI", 0x20: "PROT_MTE"}
PROT_WRITE = 2
PROT_EXEC = 4
PROT_KNOWN = 7

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x100
MAP_DENYWRITE = 0x800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000
MAP_KNOWN = (
    MAP_TYPE
    | MAP_FIXED
    | MAP_ANONYMOUS
    | MAP_GROWSDOWN
    | MAP_DENYWRITE
    | MAP_EXECUTABLE
    | MAP_LOCKED
    | MAP_NORESERVE
    | MAP_POPULATE
    | MAP_NONBLOCK
    | MAP_STACK
    | MAP_HUGETLB
    | MAP_SYNC
    | MAP_FIXED_NOREPLACE
    | 0xFC000000  # huge page size bits
)

MAP_FLAG_NAMES = {
    MAP_FIXED: "MAP_FIXED",
    MAP_ANONYMOUS: "MAP_ANONYMOUS",
    MAP_GROWSDOWN: "MAP_GROWSDOWN",
    MAP_DENYWRITE: "MAP_DENYWRITE",
    MAP_EXECUTABLE: "MAP_EXECUTABLE",
    MAP_LOCKED: "MAP_LOCKED",
    MAP_NORESERVE: "MAP_NORESERVE",
    MAP_POPULATE: "MAP_POPULATE",
    MAP_NONBLOCK: "MAP_NONBLOCK",
    MAP_STACK: "MAP_STACK",
    MAP_HUGETLB: "MAP_HUGETLB",
    MAP_SYNC: "MAP_SYNC",
    MAP_FIXED_NOREPLACE: "MAP_FIXED_NOREPLACE",
}
PROT = Flags(PROT_NAMES, zero="PROT_NONE")
MAP_FLAGS = Flags(
    MAP_FLAG_NAMES,
    mask_field={1: "MAP_SHARED", 2: "MAP_PRIVATE", 3: "MAP_SHARED_VALIDATE"},
    field_mask=MAP_TYPE,
)

_libc = LIBC
MAP_FAILED = ctypes.c_void_p(-1).value


def host_shared_map(length: int, fd: int, offset: int, writable: bool) -> int:
    """A host MAP_SHARED mapping (of a file, or anonymous with fd -1); its address."""
    prot = host_mmap.PROT_READ | (host_mmap.PROT_WRITE if writable else 0)
    flags = host_mmap.MAP_SHARED | (host_mmap.MAP_ANONYMOUS if fd < 0 else 0)
    address = _libc.mmap(None, length, prot, flags, fd, offset)
    if address == MAP_FAILED or address is None:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return address


@syscall("brk", PTR, ret=Ret.HEX)
def brk(proc: GuestProcess, new: int) -> int:
    mem = proc.mem
    if new < mem.brk_start:
        return mem.brk
    old_end = mem.page_align(mem.brk)
    new_end = mem.page_align(new)
    if new_end > old_end:
        if not mem.is_free(old_end, new_end) or new_end > proc.stack_low:
            return mem.brk
        mem.map(old_end, new_end - old_end, 3, "[heap]")
        _join_heap(proc, old_end)
    elif new_end < old_end:
        mem.unmap(new_end, old_end - new_end)
    mem.brk = new
    return new


def _join_heap(proc: GuestProcess, boundary: int) -> None:
    proc.mem._merge_around(boundary - 1, boundary + 1)


@syscall("mmap", PTR, ULONG, PROT, MAP_FLAGS, MAYBE_FD, LONG, ret=Ret.HEX)
def mmap(
    proc: GuestProcess, addr: int, length: int, prot: int, flags: int, fd: int, offset: int
) -> int:
    mem = proc.mem
    page = mem.page_size
    kind = flags & MAP_TYPE
    if kind not in (MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE):
        return -errno.EINVAL
    if kind == MAP_SHARED_VALIDATE and flags & ~MAP_KNOWN:
        return -errno.EOPNOTSUPP
    if length == 0 or offset % page:
        return -errno.EINVAL
    size = mem.page_align(length)
    task_size = proc.linux.task_size
    if size == 0 or size > task_size:
        return -errno.ENOMEM
    fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)
    if fixed:
        if addr % page:
            return -errno.EINVAL
        if addr + size > task_size:
            return -errno.ENOMEM
        if addr < MIN_MAP_ADDRESS:
            return -errno.EPERM
        if (
            flags & MAP_FIXED_NOREPLACE
            and not flags & MAP_FIXED
            and not mem.is_free(addr, addr + size)
        ):
            return -errno.EEXIST
        start = addr
    else:
        found = mem.find_free(size, addr)
        if found is None:
            return -errno.ENOMEM
        start = found
    anonymous = bool(flags & MAP_ANONYMOUS)
    shared = kind in (MAP_SHARED, MAP_SHARED_VALIDATE)
    name = ""
    device = inode = 0
    file_end = None  # where a regular file's pages end: SIGBUS past it (Mapping.file_end)
    mode = os.O_RDWR  # anonymous memory may always be written
    if not anonymous:
        st = os.fstat(guest_fd(proc, fd))  # EBADF
        if host_stat.S_ISDIR(st.st_mode):
            return -errno.ENODEV
        mode = _access_mode(fd)
        if mode == os.O_WRONLY:
            return -errno.EACCES
        if shared and prot & 2 and mode != os.O_RDWR:
            return -errno.EACCES
        name = _fd_name(fd)
        device, inode = st.st_dev, st.st_ino
        if host_stat.S_ISREG(st.st_mode):
            file_end = file_end_of(start, offset, st.st_size, page)
    prot &= PROT_KNOWN
    if shared:
        may_write = mode == os.O_RDWR
        host_address = host_shared_map(
            size, -1 if anonymous else fd, 0 if anonymous else offset, may_write
        )
        m = mem.map(
            start,
            size,
            prot,
            name or "/dev/zero (deleted)",
            offset=offset,
            host_address=host_address,
            device=device,
            inode=inode,
            file_end=file_end,
        )
        m.shared = True
        m.may_write = may_write
    else:
        file_pages = None
        if not anonymous and host_stat.S_ISREG(st.st_mode) and st.st_size > offset:
            file_pages = _host_private_file_map(fd, offset, size, st.st_size)
        mem.map(
            start,
            size,
            prot,
            name,
            offset=offset if not anonymous else 0,
            device=device,
            inode=inode,
            private_host=file_pages,
            file_end=file_end,
        )
        if not anonymous and file_pages is None:
            _fill_from_file(mem, start, size, fd, offset)
    if flags & MAP_LOCKED or _LOCK_FUTURE:
        _lock_new_mapping(mem, start, size, flags)
    return start


_HOST_PAGE = 4096
_HOST_MAP_PRIVATE_FIXED = 0x02 | 0x10  # x86_64 values (Python's mmap module lacks MAP_FIXED)


def _host_private_file_map(fd: int, offset: int, size: int, file_size: int) -> int | None:
    """Host pages for a private mapping of a regular file, as Linux makes them: the file's
    pages copy-on-write (nothing is read now), zero pages past its end (where the host would
    raise SIGBUS instead). None when the host will not map the file: the caller copies."""
    try:
        base = host_private_pages(size)
    except OSError:
        return None
    read_write = host_mmap.PROT_READ | host_mmap.PROT_WRITE
    file_part = min(size, (file_size - offset + _HOST_PAGE - 1) & ~(_HOST_PAGE - 1))
    placed = _libc.mmap(base, file_part, read_write, _HOST_MAP_PRIVATE_FIXED, fd, offset)
    if placed != base:
        _libc.munmap(base, size)
        return None
    return base


def _fill_from_file(mem: AddressSpace, start: int, size: int, fd: int, offset: int) -> None:
    """A private mapping's first contents, for files the host does not map (devices, empty
    /proc files that read as text): the bytes read from `offset`, zeros past the end."""
    host = mem.host_span_of_new(start, size)
    if not host:
        mem.write_init(start, os.pread(fd, size, offset))
        return
    done = 0
    while done < size:
        # at most 1 GiB a call: host_libc passes counts as C ints
        n = host_libc.pread_into(fd, host + done, min(size - done, 1 << 30), offset + done)
        if n == 0:  # end of file: the rest stays zero
            return
        done += n


def _access_mode(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE


def _fd_name(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@syscall("munmap", PTR, ULONG)
def munmap(proc: GuestProcess, addr: int, length: int) -> int:
    mem = proc.mem
    if addr % mem.page_size or length == 0:
        return -errno.EINVAL
    mem.unmap(addr, mem.page_align(length))
    return 0


@syscall("mprotect", PTR, ULONG, PROT)
def mprotect(proc: GuestProcess, addr: int, length: int, prot: int) -> int:
    mem = proc.mem
    if addr % mem.page_size:
        return -errno.EINVAL
    if prot & ~(PROT_KNOWN | 0x10 | 0x20 | 0x01000000 | 0x02000000):
        return -errno.EINVAL
    size = mem.page_align(length)
    if size == 0:
        return 0
    end = addr + size
    if prot & PROT_WRITE and any(
        not m.may_write for m in mem.mappings() if m.start < end and addr < m.end
    ):
        return -errno.EACCES
    # Linux changes the mappings in order up to the first hole, then fails with ENOMEM.
    mapped_end = addr
    while mapped_end < end and (m := mem.find(mapped_end)) is not None:
        mapped_end = min(m.end, end)
    if mapped_end > addr:
        mem.protect(addr, mapped_end - addr, prot & PROT_KNOWN)
    return 0 if mapped_end == end else -errno.ENOMEM


MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4


MREMAP_FLAGS = Flags({1: "MREMAP_MAYMOVE", 2: "MREMAP_FIXED", 4: "MREMAP_DONTUNMAP"})


@syscall("mremap", PTR, ULONG, ULONG, MREMAP_FLAGS, PTR, ret=Ret.HEX)
def mremap(
    proc: GuestProcess, old: int, old_size: int, new_size: int, flags: int, new_addr: int
) -> int:
    mem = proc.mem
    page = mem.page_size
    if old % page or flags & ~7 or (flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE):
        return -errno.EINVAL
    old_size = mem.page_align(old_size)
    new_size = mem.page_align(new_size)
    if new_size == 0:
        return -errno.EINVAL
    m = mem.find(old)
    # Linux wants the old range inside one mapping.
    if m is None or old + old_size > m.end:
        return -errno.EFAULT
    if old_size == 0:
        # Linux duplicates a shared mapping here; a private one gets EINVAL. We support
        # neither duplicate (the host pages would be released twice).
        return -errno.EINVAL
    if flags & MREMAP_FIXED:
        if new_addr % page or (new_addr < old + old_size and old < new_addr + new_size):
            return -errno.EINVAL
        if new_addr + new_size > proc.linux.task_size:
            return -errno.ENOMEM
        mem.move(old, old_size, new_addr, new_size)
        return new_addr
    if new_size <= old_size:
        return _shrink(proc, old, old_size, new_size)
    # grow in place when the pages after it are free
    if mem.is_free(old + old_size, old + new_size):
        if m.shared:
            mem.move(old, old_size, old, new_size)
            return old
        mem.map(
            old + old_size,
            new_size - old_size,
            m.prot,
            m.name,
            offset=m.offset + (old + old_size - m.start) if m.name else 0,
            device=m.device,
            inode=m.inode,
        )
        mem._merge_around(old, old + new_size)
        return old
    if not flags & MREMAP_MAYMOVE:
        return -errno.ENOMEM
    target = mem.find_free(new_size)
    if target is None:
        return -errno.ENOMEM
    mem.move(old, old_size, target, new_size)
    return target


def _shrink(proc: GuestProcess, old: int, old_size: int, new_size: int) -> int:
    if new_size < old_size:
        proc.mem.unmap(old + new_size, old_size - new_size)
    return old


MADV_NAMES = {
    0: "MADV_NORMAL",
    1: "MADV_RANDOM",
    2: "MADV_SEQUENTIAL",
    3: "MADV_WILLNEED",
    4: "MADV_DONTNEED",
    8: "MADV_FREE",
    9: "MADV_REMOVE",
    10: "MADV_DONTFORK",
    11: "MADV_DOFORK",
    12: "MADV_MERGEABLE",
    13: "MADV_UNMERGEABLE",
    14: "MADV_HUGEPAGE",
    15: "MADV_NOHUGEPAGE",
    16: "MADV_DONTDUMP",
    17: "MADV_DODUMP",
    18: "MADV_WIPEONFORK",
    19: "MADV_KEEPONFORK",
    20: "MADV_COLD",
    21: "MADV_PAGEOUT",
    22: "MADV_POPULATE_READ",
    23: "MADV_POPULATE_WRITE",
    100: "MADV_HWPOISON",
}


@syscall("madvise", PTR, ULONG, Enum(MADV_NAMES))
def madvise(proc: GuestProcess, addr: int, length: int, advice: int) -> int:
    mem = proc.mem
    if addr % mem.page_size or advice not in MADV_NAMES:
        return -errno.EINVAL
    size = mem.page_align(length)
    if size == 0:
        return 0
    if not mem.is_fully_mapped(addr, addr + size):
        return -errno.ENOMEM
    if advice in (MADV_DONTNEED, MADV_FREE, MADV_REMOVE):
        _discard(mem, addr, addr + size, advice)
    return 0


MADV_DONTNEED = 4
MADV_FREE = 8
MADV_REMOVE = 9


def _discard(mem: AddressSpace, start: int, end: int, advice: int) -> None:
    """The host does MADV_DONTNEED / FREE / REMOVE on the host pages behind the guest's, with
    Linux's own result: a private file page (host pages that map the file copy-on-write) comes
    back from the file as it is now, a private anonymous page reads zero, a shared page keeps
    its contents, REMOVE punches a hole in shared memory and refuses private (EINVAL/EACCES).
    A reservation never made accessible has no pages and reads zero already."""
    pos = start
    while pos < end:
        m = mem.find(pos)
        assert m is not None
        stop = min(m.end, end)
        if m.backed:
            page = pos
            while page < stop:
                if m.host_address is not None:  # shared: one host mapping behind it
                    host, length = m.host_address + (page - m.start), stop - page
                else:  # private: our host pages, one piece or page by page
                    length = stop - page
                    host = mem.host_span_of_new(page, length)
                    if not host:
                        length = mem.page_size
                        host = mem.host_span_of_new(page, length)
                if host:
                    host_syscall(HOST_SYS_MADVISE, host, length, advice)
                page += length
            if m.prot & PROT_EXEC:  # what was translated from the old bytes is stale
                mem._drop_translations(pos, stop)
        pos = stop


@syscall("msync", PTR, ULONG, Flags({1: "MS_ASYNC", 2: "MS_INVALIDATE", 4: "MS_SYNC"}))
def msync(proc: GuestProcess, addr: int, length: int, flags: int) -> int:
    mem = proc.mem
    if addr % mem.page_size or flags & ~7 or (flags & 1 and flags & 4):
        return -errno.EINVAL
    size = mem.page_align(length)
    if not mem.is_fully_mapped(addr, addr + size):
        return -errno.ENOMEM
    # the host's msync on the host pages behind every part: it writes shared ones back, and
    # says EBUSY for MS_INVALIDATE of locked ones (msync03), as Linux does for the guest's
    for _, host, length in host_pieces(mem, addr, addr + size):
        host_syscall(HOST_SYS_MSYNC, host, length, flags)
    return 0


# Memory locks are the host's, on the host pages behind the guest's: /proc/self/status's
# VmLck (the host's file) then counts them, smaps' Locked reads them back from the host's
# smaps, mincore sees the pages they made resident, and an unmap or exec drops them with the
# pages, as Linux does. mlockall locks the guest's mappings, never the emulator's own memory.
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
_HOST_SYS_MLOCK2 = 325  # x86_64; MLOCK_ONFAULT = 1
# address spaces under mlockall(MCL_FUTURE): their new mappings are locked as made (the
# value: MCL_ONFAULT or not). An exec'd program gets a new address space, so it starts clear.
_LOCK_FUTURE: weakref.WeakKeyDictionary[AddressSpace, int] = weakref.WeakKeyDictionary()


def host_pieces(mem: AddressSpace, start: int, end: int) -> list[tuple[int, int, int]]:
    """(guest address, host address, length) of the host pages behind guest [start, end),
    where it has any (a reservation never made accessible has none)."""
    pieces = []
    table = mem._host_pages
    i = max(bisect.bisect_right(mem._host_pages_starts, start) - 1, 0)
    while i < len(table) and table[i].start < end:
        pages = table[i]
        low, high = max(pages.start, start), min(pages.end, end)
        if low < high:
            pieces.append((low, pages.host + low - pages.start, high - low))
        i += 1
    return pieces


def _lock_range(mem: AddressSpace, start: int, end: int, lock: bool, on_fault: bool) -> None:
    for _, host, length in host_pieces(mem, start, end):
        if not lock:
            host_syscall(HOST_SYS_MUNLOCK, host, length)
        elif on_fault:
            host_syscall(_HOST_SYS_MLOCK2, host, length, 1)
        else:
            host_syscall(HOST_SYS_MLOCK, host, length)


def _lock_call(proc: GuestProcess, addr: int, length: int, lock: bool, on_fault: bool) -> int:
    mem = proc.mem
    start = addr & ~(mem.page_size - 1)
    end = mem.page_align(addr + length)
    if end < start:
        return -errno.EINVAL  # wraps around (Linux: start + len < start)
    if not mem.is_fully_mapped(start, end):
        return -errno.ENOMEM
    _lock_range(mem, start, end, lock, on_fault)
    return 0


@syscall("mlock", PTR, ULONG)
def mlock(proc: GuestProcess, addr: int, length: int) -> int:
    return _lock_call(proc, addr, length, True, False)


@syscall("mlock2", PTR, ULONG, Flags({1: "MLOCK_ONFAULT"}))
def mlock2(proc: GuestProcess, addr: int, length: int, flags: int) -> int:
    if flags & ~1:
        return -errno.EINVAL
    return _lock_call(proc, addr, length, True, bool(flags))


@syscall("munlock", PTR, ULONG)
def munlock(proc: GuestProcess, addr: int, length: int) -> int:
    return _lock_call(proc, addr, length, False, False)


@syscall("mlockall", Flags({1: "MCL_CURRENT", 2: "MCL_FUTURE", 4: "MCL_ONFAULT"}))
def mlockall(proc: GuestProcess, flags: int) -> int:
    if not flags & (MCL_CURRENT | MCL_FUTURE) or flags & ~(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT):
        return -errno.EINVAL
    mem = proc.mem
    on_fault = bool(flags & MCL_ONFAULT)
    if flags & MCL_FUTURE:
        _LOCK_FUTURE[mem] = on_fault
    else:
        _LOCK_FUTURE.pop(mem, None)
    if flags & MCL_CURRENT:
        for m in mem.mappings():
            if m.prot and m.backed:  # Linux populates no PROT_NONE page either
                _lock_range(mem, m.start, m.end, True, on_fault)
    return 0


@syscall("munlockall")
def munlockall(proc: GuestProcess) -> int:
    mem = proc.mem
    _LOCK_FUTURE.pop(mem, None)
    for m in mem.mappings():
        _lock_range(mem, m.start, m.end, False, False)
    return 0


def _lock_new_mapping(mem: AddressSpace, start: int, size: int, flags: int) -> None:
    """MAP_LOCKED, or mlockall(MCL_FUTURE) in force: lock what mmap just made. As in Linux,
    a lock that fails (RLIMIT_MEMLOCK) does not fail the mmap."""
    on_fault = _LOCK_FUTURE.get(mem)
    if not flags & MAP_LOCKED and on_fault is None:
        return
    try:
        _lock_range(mem, start, start + size, True, bool(on_fault))
    except OSError:
        pass


@syscall("mincore", PTR, ULONG, PTR)
def mincore(proc: GuestProcess, addr: int, length: int, vec: int) -> int:
    mem = proc.mem
    if addr % mem.page_size:
        return -errno.EINVAL
    size = mem.page_align(length)
    if not mem.is_fully_mapped(addr, addr + size):
        return -errno.ENOMEM
    # the host's own answer for the host pages behind it; pages with none are not resident
    resident = bytearray(size // mem.page_size)
    for guest, host, count in host_pieces(mem, addr, addr + size):
        answer = ctypes.create_string_buffer(count // mem.page_size)
        host_syscall(HOST_SYS_MINCORE, host, count, answer)
        first = (guest - addr) // mem.page_size
        resident[first : first + len(answer.raw)] = bytes(b & 1 for b in answer.raw)
    proc.mem.write(vec, bytes(resident))
    return 0
