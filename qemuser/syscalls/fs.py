"""Files and directories: open/read/write/stat and friends.

Guest fds are host fds (as in qemu-user): what the guest opens, the host process holds, so
fork, exec and fd passing need no translation table. Python's os.open, os.dup and os.pipe would
mark new fds close-on-exec, so new fds come from raw host calls that add nothing the guest did not
ask for. The *at calls go to the host kernel as they are (dirfd, flags), so that its checks and
errno values are the guest's; only pointers, structs and open flags are translated.

Paths: an absolute path that names something inside the sysroot (-L) means that file, for the
calls that look a file up (open, stat, statx, access, readlink, statfs), as in qemu-user. Calls
that create, change or remove names act on the path as given.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl as host_fcntl
import os
from stat import S_ISREG
from typing import TYPE_CHECKING

from qemuser.host import libc as host_libc
from qemuser.host.libc import UNMAPPED_HOST_ADDRESS, host_syscall
from qemuser.host.sysnums import (
    HOST_SYS_CLOSE_RANGE,
    HOST_SYS_COPY_FILE_RANGE,
    HOST_SYS_DUP3,
    HOST_SYS_FACCESSAT2,
    HOST_SYS_FADVISE64,
    HOST_SYS_FALLOCATE,
    HOST_SYS_FCHMOD,
    HOST_SYS_FCHMODAT,
    HOST_SYS_FCHOWN,
    HOST_SYS_FCHOWNAT,
    HOST_SYS_FCNTL,
    HOST_SYS_FLOCK,
    HOST_SYS_FSTATFS,
    HOST_SYS_GETDENTS64,
    HOST_SYS_LINKAT,
    HOST_SYS_MEMFD_CREATE,
    HOST_SYS_MKDIRAT,
    HOST_SYS_MKNODAT,
    HOST_SYS_NAME_TO_HANDLE_AT,
    HOST_SYS_OPEN_BY_HANDLE_AT,
    HOST_SYS_OPENAT,
    HOST_SYS_PREADV2,
    HOST_SYS_PWRITEV2,
    HOST_SYS_READAHEAD,
    HOST_SYS_READLINKAT,
    HOST_SYS_RENAMEAT2,
    HOST_SYS_SENDFILE,
    HOST_SYS_SPLICE,
    HOST_SYS_STATFS,
    HOST_SYS_STATX,
    HOST_SYS_SYMLINKAT,
    HOST_SYS_SYNC_FILE_RANGE,
    HOST_SYS_SYNCFS,
    HOST_SYS_TEE,
    HOST_SYS_TRUNCATE,
    HOST_SYS_UNLINKAT,
    HOST_SYS_UTIMENSAT,
    HOST_SYS_VMSPLICE,
    HOST_SYS_XATTR,
)
from qemuser.loader.fault import GuestFault
from qemuser.syscalls.abi import filecontrol as abi_fcntl
from qemuser.syscalls.abi.dirent import guest_dirents
from qemuser.syscalls.abi.filecontrol import F_OWNER_EX, FLOCK
from qemuser.syscalls.abi.filehandle import (
    AT_HANDLE_MNT_ID_UNIQUE,
    FILE_HANDLE_HEAD,
    HANDLE_BYTES,
    MAX_HANDLE_SZ,
    MOUNT_ID,
    MOUNT_ID_UNIQUE,
)
from qemuser.syscalls.abi.filestat import (
    STAT,
    STATFS,
    STATX,
    STATX_BASIC_STATS,
    Statx,
    guest_statx,
    stat_from_statx,
)
from qemuser.syscalls.abi.scalars import FD_PAIR, LOFF_T
from qemuser.syscalls.abi.sockets import IOVEC, UIO_MAXIOV
from qemuser.syscalls.abi.timespec import TIMESPEC
from qemuser.syscalls.argkinds import (
    DIRFD,
    FD,
    INT,
    LONG,
    OCTAL,
    PATH,
    PTR,
    ULONG,
    ArgKind,
    Enum,
    Flags,
    InBuf,
    OutBuf,
    StructIn,
    StructOut,
    s32,
)
from qemuser.syscalls.registry import syscall
from qemuser.syscalls.sysnums import GENERIC

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EACCESS = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000


class OpenFlagsKind(ArgKind):
    def decode(self, proc: GuestProcess, raw: int) -> int:
        return raw & 0xFFFF_FFFF

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        value = raw & 0xFFFF_FFFF
        parts = [("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")[value & 3]]
        value &= ~3
        for bit, name in proc.open_codec.names().items():
            if value & bit == bit:
                parts.append(name)
                value &= ~bit
        if value:
            parts.append(f"{value:#o}")
        return "|".join(parts)


class GuestFlagsKind(OpenFlagsKind):
    """Open flags without an access mode (pipe2, dup3): names only."""

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        value = raw & 0xFFFF_FFFF
        parts = []
        for bit, name in proc.open_codec.names().items():
            if value & bit == bit:
                parts.append(name)
                value &= ~bit
        if value:
            parts.append(f"{value:#o}")
        return "|".join(parts) or "0"


OPEN_FLAGS = OpenFlagsKind()
GUEST_FLAGS = GuestFlagsKind()
AT_FLAGS = Flags(
    {
        AT_SYMLINK_NOFOLLOW: "AT_SYMLINK_NOFOLLOW",
        AT_REMOVEDIR: "AT_REMOVEDIR",
        AT_SYMLINK_FOLLOW: "AT_SYMLINK_FOLLOW",
        AT_EMPTY_PATH: "AT_EMPTY_PATH",
        AT_NO_AUTOMOUNT: "AT_NO_AUTOMOUNT",
    }
)
SEEK = Enum({0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"})


# ---- paths -----------------------------------------------------------------------------------


def proc_self_path(proc: GuestProcess, path: bytes) -> bytes | None:
    """/proc/self/exe names the guest program, not the emulator."""
    for prefix in (b"/proc/self/", f"/proc/{proc.pid}/".encode()):
        if path.startswith(prefix) and path[len(prefix) :] == b"exe":
            return os.fsencode(proc.exe_path)
    return None


def resolve(proc: GuestProcess, path: bytes) -> bytes:
    """A guest path to look a file up by: /proc/self/exe, then the sysroot first."""
    special = proc_self_path(proc, path)
    if special is not None:
        return special
    return proc.host_path(path)


def as_given(proc: GuestProcess, path: bytes) -> bytes:
    """A guest path that creates, changes or removes a name: never redirected to the sysroot."""
    special = proc_self_path(proc, path)
    return path if special is None else special


def need_path(path: bytes | None) -> bytes:
    if path is None:
        raise OSError(errno.EFAULT, "NULL path")
    return path


def show_stat(proc: GuestProcess, addr: int) -> str:
    st = STAT.unpack(proc.mem.read(addr, STAT.size))
    return f"{{st_mode={_mode_text(st.st_mode)},st_size={st.st_size},...}}"


def _mode_text(mode: int) -> str:
    kinds = {
        0o140000: "S_IFSOCK",
        0o120000: "S_IFLNK",
        0o100000: "S_IFREG",
        0o60000: "S_IFBLK",
        0o40000: "S_IFDIR",
        0o20000: "S_IFCHR",
        0o10000: "S_IFIFO",
    }
    return f"{kinds.get(mode & 0o170000, '0')}|0{mode & 0o7777:o}"


STAT_OUT = StructOut(show_stat)


# ---- open / close ----------------------------------------------------------------------------


@syscall("openat", DIRFD, PATH, OPEN_FLAGS, OCTAL, blocks=True)
def openat(proc: GuestProcess, dirfd: int, path: bytes | None, flags: int, mode: int) -> int:
    path = need_path(path)
    synthetic = proc.open_special(path, flags)
    if synthetic is not None:
        return synthetic
    return host_syscall(
        HOST_SYS_OPENAT, dirfd, resolve(proc, path), proc.open_codec.to_host(flags), mode
    )


@syscall("close", FD)
def close(proc: GuestProcess, fd: int) -> int:
    if fd in proc.host_fd_reserved:
        return -errno.EBADF
    os.close(fd)
    return 0


CLOSE_RANGE_UNSHARE = 2
CLOSE_RANGE_CLOEXEC = 4


@syscall("close_range", INT, INT, Flags({2: "CLOSE_RANGE_UNSHARE", 4: "CLOSE_RANGE_CLOEXEC"}))
def close_range(proc: GuestProcess, first: int, last: int, flags: int) -> int:
    first &= 0xFFFF_FFFF
    last &= 0xFFFF_FFFF
    if flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) or first > last:
        return -errno.EINVAL
    # The host call does the range in one go (a child of CPython's subprocess closes 3..~0U);
    # the emulator's own fds inside it are stepped over.
    start = first
    for reserved in sorted(fd for fd in proc.host_fd_reserved if first <= fd <= last):
        if start < reserved:
            host_syscall(HOST_SYS_CLOSE_RANGE, start, reserved - 1, flags)
        start = reserved + 1
    if start <= last:
        host_syscall(HOST_SYS_CLOSE_RANGE, start, last, flags)
    return 0


# ---- read / write ----------------------------------------------------------------------------

MAX_RW_COUNT = 0x7FFFF000  # Linux caps one read/write at INT_MAX rounded down to a page


def check_writable(proc: GuestProcess, buf: int, count: int) -> None:
    """Fail with EFAULT before consuming input that could not be delivered (as qemu-user)."""
    proc.mem.check_writable(buf, count)


@syscall("read", FD, OutBuf(2), ULONG, blocks=True)
def read(proc: GuestProcess, fd: int, buf: int, count: int) -> int:
    if count > MAX_RW_COUNT:
        count = MAX_RW_COUNT
    elif not count:
        return host_libc.read_into(fd, 0, 0)  # the fd is still checked
    # EFAULT before consuming input that could not be delivered (as qemu-user)
    host = proc.mem.host_span(buf, count, True)
    if host:
        return host_libc.read_into(fd, host, count)
    data = host_libc.read(fd, count)  # a signal interrupts it as on Linux (os.read retries)
    proc.mem.write(buf, data)
    return len(data)


@syscall("write", FD, InBuf(2), ULONG, blocks=True)
def write(proc: GuestProcess, fd: int, buf: int, count: int) -> int:
    if count > MAX_RW_COUNT:
        count = MAX_RW_COUNT
    elif not count:
        return host_libc.write_from(fd, 0, 0)
    host = proc.mem.host_span(buf, count, False)
    if host:
        return host_libc.write_from(fd, host, count)
    return host_libc.write(fd, proc.mem.read(buf, count))


@syscall("pread64", FD, OutBuf(2), ULONG, LONG, blocks=True)
def pread64(proc: GuestProcess, fd: int, buf: int, count: int, offset: int) -> int:
    if offset < 0:
        return -errno.EINVAL
    count = min(count, MAX_RW_COUNT)
    host = proc.mem.host_span(buf, count, write=True) if count else 0
    if host or not count:
        return host_libc.pread_into(fd, host, count, offset)
    data = os.pread(fd, count, offset)
    proc.mem.write(buf, data)
    return len(data)


@syscall("pwrite64", FD, InBuf(2), ULONG, LONG, blocks=True)
def pwrite64(proc: GuestProcess, fd: int, buf: int, count: int, offset: int) -> int:
    if offset < 0:
        return -errno.EINVAL
    count = min(count, MAX_RW_COUNT)
    host = proc.mem.host_span(buf, count, write=False) if count else 0
    if host or not count:
        return host_libc.pwrite_from(fd, host, count, offset)
    return os.pwrite(fd, proc.mem.read(buf, count), offset)


def read_iovec(proc: GuestProcess, iov: int, count: int) -> list[tuple[int, int]]:
    """struct iovec[] (include/uapi/linux/uio.h): {void *iov_base; size_t iov_len}."""
    if count < 0 or count > UIO_MAXIOV:
        raise OSError(errno.EINVAL, "bad iovcnt")
    data = proc.mem.read(iov, IOVEC.size * count)
    vecs = [IOVEC.unpack(data, IOVEC.size * i) for i in range(count)]
    if any(length >> 63 for _, length in vecs):  # a negative ssize_t length
        raise OSError(errno.EINVAL, "iovec too long")
    return vecs


def _iov_total(vecs: list[tuple[int, int]]) -> int:
    return min(sum(length for _, length in vecs), MAX_RW_COUNT)


def scatter(proc: GuestProcess, vecs: list[tuple[int, int]], data: bytes) -> None:
    pos = 0
    for base, length in vecs:
        if pos >= len(data):
            break
        chunk = data[pos : pos + length]
        proc.mem.write(base, chunk)
        pos += len(chunk)


def check_scatter(proc: GuestProcess, vecs: list[tuple[int, int]]) -> None:
    for base, length in vecs:
        check_writable(proc, base, length)


def _gather(proc: GuestProcess, vecs: list[tuple[int, int]]) -> bytes:
    return b"".join(proc.mem.read(base, length) for base, length in vecs)


def transferable(
    proc: GuestProcess, fd: int, vecs: list[tuple[int, int]], fill: bool
) -> list[tuple[int, int]]:
    """As Linux for a regular file: a vectored transfer stops at the first byte the guest may
    not access (for a read: may not write), and what comes before it is done; GuestFault
    (EFAULT) when nothing could be. Only called once an entry has faulted. A pipe or a socket
    fails whole, its input kept (pipe_read gives EFAULT for a partly copied buffer), and an
    entry reaching past the user address space fails the call at once (access_ok)."""
    task_size = proc.linux.task_size
    if any(length and base + length > task_size for base, length in vecs):
        raise GuestFault(task_size, fill)
    if not S_ISREG(os.fstat(fd).st_mode):
        raise GuestFault(vecs[0][0], fill)
    page = proc.mem.page_size
    for i, (base, length) in enumerate(vecs):
        done = 0
        while done < length:
            chunk = min(length - done, page - (base + done) % page)
            try:
                proc.mem.host_span(base + done, chunk, fill)  # GuestFault: no access
            except GuestFault:
                prefix = vecs[:i] + ([(base, done)] if done else [])
                if not any(n for _, n in prefix):
                    raise
                return prefix
            done += chunk
    return vecs


def host_iovec(proc: GuestProcess, vecs: list[tuple[int, int]], fill: bool) -> ctypes.Array | None:
    """The guest's iovec as the host's (struct iovec has the same layout on both), pointing
    straight into guest memory; GuestFault when an entry is not accessible, None when one
    must go through copies (see AddressSpace.host_span)."""
    host_vecs = (ctypes.c_uint64 * (2 * len(vecs) or 2))()
    for i, (base, length) in enumerate(vecs):
        if length:
            host = proc.mem.host_span(base, length, fill)
            if not host:
                return None
            host_vecs[2 * i] = host
            host_vecs[2 * i + 1] = length
    return host_vecs


@syscall("readv", FD, PTR, INT, blocks=True)
def readv(proc: GuestProcess, fd: int, iov: int, count: int) -> int:
    return preadv2(proc, fd, iov, count, -1, 0, 0)  # offset -1: the file position


@syscall("writev", FD, PTR, INT, blocks=True)
def writev(proc: GuestProcess, fd: int, iov: int, count: int) -> int:
    return pwritev2(proc, fd, iov, count, -1, 0, 0)


@syscall("preadv", FD, PTR, INT, LONG, blocks=True)
def preadv(proc: GuestProcess, fd: int, iov: int, count: int, offset: int) -> int:
    if offset < 0:
        return -errno.EINVAL
    return preadv2(proc, fd, iov, count, offset, 0, 0)


@syscall("pwritev", FD, PTR, INT, LONG, blocks=True)
def pwritev(proc: GuestProcess, fd: int, iov: int, count: int, offset: int) -> int:
    if offset < 0:
        return -errno.EINVAL
    return pwritev2(proc, fd, iov, count, offset, 0, 0)


# preadv2/pwritev2 go to the host as they are: offset -1 (the file position) and the RWF_*
# flags keep the kernel's meaning and checks. On 64-bit, pos_l carries the whole offset.


@syscall("preadv2", FD, PTR, INT, LONG, LONG, INT)
def preadv2(
    proc: GuestProcess, fd: int, iov: int, count: int, offset: int, _pos_h: int, flags: int
) -> int:
    vecs = read_iovec(proc, iov, count)
    flags &= 0xFFFF_FFFF
    try:
        direct = host_iovec(proc, vecs, fill=True)
        if direct is None:
            check_scatter(proc, vecs)  # EFAULT before consuming input it could not deliver
    except GuestFault:
        vecs = transferable(proc, fd, vecs, fill=True)
        direct = host_iovec(proc, vecs, fill=True)
    if direct is not None:
        return host_syscall(HOST_SYS_PREADV2, fd, direct, len(vecs), offset, 0, flags)
    total = _iov_total(vecs)
    buffer = ctypes.create_string_buffer(max(total, 1))
    host_iov = (ctypes.c_uint64 * 2)(ctypes.addressof(buffer), total)
    n = host_syscall(HOST_SYS_PREADV2, fd, host_iov, 1, offset, 0, flags)
    scatter(proc, vecs, buffer.raw[:n])
    return n


@syscall("pwritev2", FD, PTR, INT, LONG, LONG, INT)
def pwritev2(
    proc: GuestProcess, fd: int, iov: int, count: int, offset: int, _pos_h: int, flags: int
) -> int:
    vecs = read_iovec(proc, iov, count)
    flags &= 0xFFFF_FFFF
    try:
        direct = host_iovec(proc, vecs, fill=False)
        data = b"" if direct is not None else _gather(proc, vecs)
    except GuestFault:
        vecs = transferable(proc, fd, vecs, fill=False)
        direct = host_iovec(proc, vecs, fill=False)
        data = b"" if direct is not None else _gather(proc, vecs)
    if direct is not None:
        return host_syscall(HOST_SYS_PWRITEV2, fd, direct, len(vecs), offset, 0, flags)
    buffer = ctypes.create_string_buffer(data, max(len(data), 1))
    host_iov = (ctypes.c_uint64 * 2)(ctypes.addressof(buffer), len(data))
    return host_syscall(HOST_SYS_PWRITEV2, fd, host_iov, 1, offset, 0, flags)


@syscall("lseek", FD, LONG, SEEK)
def lseek(proc: GuestProcess, fd: int, offset: int, whence: int) -> int:
    return os.lseek(fd, offset, whence)


# ---- stat ------------------------------------------------------------------------------------

STATX_RESERVED = 0x8000_0000
NEWFSTATAT_FLAGS = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH


def host_statx(dirfd: int, host_path: bytes, flags: int, mask: int) -> Statx:
    """The host's statx() of a path (or of dirfd itself with AT_EMPTY_PATH and b"")."""
    buffer = ctypes.create_string_buffer(STATX.size)
    host_syscall(HOST_SYS_STATX, dirfd, host_path, flags, mask, buffer)
    return STATX.unpack(buffer.raw)


def _stat_path(proc: GuestProcess, path: bytes | None, flags: int) -> bytes:
    # A NULL path with AT_EMPTY_PATH means the fd itself (Linux 6.11 and later).
    if path is None:
        if flags & AT_EMPTY_PATH:
            return b""
        raise OSError(errno.EFAULT, "NULL path")
    return resolve(proc, path)


@syscall("fstat", FD, STAT_OUT)
def fstat(proc: GuestProcess, fd: int, statbuf: int) -> int:
    proc.mem.write(statbuf, stat_from_statx(host_statx(fd, b"", AT_EMPTY_PATH, STATX_BASIC_STATS)))
    return 0


@syscall("newfstatat", DIRFD, PATH, STAT_OUT, AT_FLAGS)
def newfstatat(proc: GuestProcess, dirfd: int, path: bytes | None, statbuf: int, flags: int) -> int:
    if flags & ~NEWFSTATAT_FLAGS:
        return -errno.EINVAL
    host = _stat_path(proc, path, flags)
    proc.mem.write(statbuf, stat_from_statx(host_statx(dirfd, host, flags, STATX_BASIC_STATS)))
    return 0


@syscall("statx", DIRFD, PATH, AT_FLAGS, Flags({}), PTR)
def statx(
    proc: GuestProcess, dirfd: int, path: bytes | None, flags: int, mask: int, buf: int
) -> int:
    if mask & STATX_RESERVED:
        return -errno.EINVAL
    host = _stat_path(proc, path, flags)
    proc.mem.write(buf, guest_statx(host_statx(dirfd, host, flags, mask)))
    return 0


@syscall("readlinkat", DIRFD, PATH, OutBuf(3), INT)
def readlinkat(proc: GuestProcess, dirfd: int, path: bytes | None, buf: int, size: int) -> int:
    path = need_path(path)
    if size <= 0:
        return -errno.EINVAL
    target = proc_self_path(proc, path)
    if target is None:
        host_buffer = ctypes.create_string_buffer(min(size, 1 << 16))
        n = host_syscall(
            HOST_SYS_READLINKAT, dirfd, proc.host_path(path), host_buffer, len(host_buffer)
        )
        target = host_buffer.raw[:n]
    target = target[:size]
    proc.mem.write(buf, target)
    return len(target)


@syscall("faccessat", DIRFD, PATH, OCTAL)
def faccessat(proc: GuestProcess, dirfd: int, path: bytes | None, mode: int) -> int:
    return faccessat2(proc, dirfd, path, mode, 0)


@syscall("faccessat2", DIRFD, PATH, OCTAL, AT_FLAGS)
def faccessat2(proc: GuestProcess, dirfd: int, path: bytes | None, mode: int, flags: int) -> int:
    path = need_path(path)
    return host_syscall(HOST_SYS_FACCESSAT2, dirfd, resolve(proc, path), mode, flags)


@syscall("getdents64", FD, PTR, ULONG)
def getdents64(proc: GuestProcess, fd: int, dirp: int, count: int) -> int:
    count = min(count, 1 << 20)
    check_writable(proc, dirp, count)
    buffer = ctypes.create_string_buffer(max(count, 1))
    hidden = _emulator_threads(proc, fd)
    while True:
        n = host_syscall(HOST_SYS_GETDENTS64, fd, buffer, count)
        records = guest_dirents(buffer.raw[:n], hidden)
        if records or not n:  # all of a batch hidden: the next one, not a false end
            break
    proc.mem.write(dirp, records)
    return len(records)


def _emulator_threads(proc: GuestProcess, fd: int) -> frozenset[bytes]:
    """The entries to hide when `fd` is this process's /proc/PID/task: the host threads that
    are no guest thread (the main guest thread's worker, timers, the tick). A guest thread's
    tid is its worker's, the main one's the process's (futex_wake02 waits for every task
    there but itself to sleep)."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return frozenset()
    if path != f"/proc/{os.getpid()}/task":
        return frozenset()
    guest = {str(tid).encode() for tid in proc.sched.threads} | {str(os.getpid()).encode()}
    try:
        host = set(os.listdir(path.encode()))
    except OSError:
        return frozenset()
    return frozenset(host - guest)


# ---- directories and names -------------------------------------------------------------------


@syscall("getcwd", OutBuf(1), ULONG)
def getcwd(proc: GuestProcess, buf: int, size: int) -> int:
    cwd = os.getcwdb() + b"\0"
    if size < len(cwd):
        return -errno.ERANGE
    proc.mem.write(buf, cwd)
    return len(cwd)


@syscall("chdir", PATH)
def chdir(proc: GuestProcess, path: bytes | None) -> int:
    os.chdir(as_given(proc, need_path(path)))
    return 0


@syscall("fchdir", FD)
def fchdir(proc: GuestProcess, fd: int) -> int:
    os.fchdir(fd)
    return 0


@syscall("chroot", PATH)
def chroot(proc: GuestProcess, path: bytes | None) -> int:
    # Changes the emulator's root too: afterwards the guest sees only what lies below it.
    os.chroot(as_given(proc, need_path(path)))
    return 0


@syscall("mkdirat", DIRFD, PATH, OCTAL)
def mkdirat(proc: GuestProcess, dirfd: int, path: bytes | None, mode: int) -> int:
    return host_syscall(HOST_SYS_MKDIRAT, dirfd, as_given(proc, need_path(path)), mode)


@syscall("mknodat", DIRFD, PATH, OCTAL, ULONG)
def mknodat(proc: GuestProcess, dirfd: int, path: bytes | None, mode: int, dev: int) -> int:
    # dev is the kernel's `unsigned int` encoding (new_encode_dev), the same on the host
    host = as_given(proc, need_path(path))
    return host_syscall(HOST_SYS_MKNODAT, dirfd, host, mode, dev & 0xFFFF_FFFF)


@syscall("unlinkat", DIRFD, PATH, AT_FLAGS)
def unlinkat(proc: GuestProcess, dirfd: int, path: bytes | None, flags: int) -> int:
    return host_syscall(HOST_SYS_UNLINKAT, dirfd, as_given(proc, need_path(path)), flags)


RENAME_FLAGS = Flags({1: "RENAME_NOREPLACE", 2: "RENAME_EXCHANGE", 4: "RENAME_WHITEOUT"})


@syscall("renameat", DIRFD, PATH, DIRFD, PATH)
def renameat(
    proc: GuestProcess, olddir: int, old: bytes | None, newdir: int, new: bytes | None
) -> int:
    return renameat2(proc, olddir, old, newdir, new, 0)


@syscall("renameat2", DIRFD, PATH, DIRFD, PATH, RENAME_FLAGS)
def renameat2(
    proc: GuestProcess, olddir: int, old: bytes | None, newdir: int, new: bytes | None, flags: int
) -> int:
    return host_syscall(
        HOST_SYS_RENAMEAT2,
        olddir,
        as_given(proc, need_path(old)),
        newdir,
        as_given(proc, need_path(new)),
        flags,
    )


@syscall("symlinkat", PATH, DIRFD, PATH)
def symlinkat(proc: GuestProcess, target: bytes | None, dirfd: int, path: bytes | None) -> int:
    # the target is stored as the guest wrote it: it is resolved when the link is followed
    return host_syscall(
        HOST_SYS_SYMLINKAT, need_path(target), dirfd, as_given(proc, need_path(path))
    )


@syscall("linkat", DIRFD, PATH, DIRFD, PATH, AT_FLAGS)
def linkat(
    proc: GuestProcess, olddir: int, old: bytes | None, newdir: int, new: bytes | None, flags: int
) -> int:
    return host_syscall(
        HOST_SYS_LINKAT,
        olddir,
        as_given(proc, need_path(old)),
        newdir,
        as_given(proc, need_path(new)),
        flags,
    )


# ---- attributes ------------------------------------------------------------------------------


@syscall("fchmod", FD, OCTAL)
def fchmod(proc: GuestProcess, fd: int, mode: int) -> int:
    return host_syscall(HOST_SYS_FCHMOD, fd, mode)


@syscall("fchmodat", DIRFD, PATH, OCTAL)
def fchmodat(proc: GuestProcess, dirfd: int, path: bytes | None, mode: int) -> int:
    return host_syscall(HOST_SYS_FCHMODAT, dirfd, as_given(proc, need_path(path)), mode)


@syscall("fchown", FD, INT, INT)
def fchown(proc: GuestProcess, fd: int, uid: int, gid: int) -> int:
    # uid_t/gid_t are unsigned: -1 (0xffffffff) leaves the id unchanged
    return host_syscall(HOST_SYS_FCHOWN, fd, uid & 0xFFFF_FFFF, gid & 0xFFFF_FFFF)


@syscall("fchownat", DIRFD, PATH, INT, INT, AT_FLAGS)
def fchownat(
    proc: GuestProcess, dirfd: int, path: bytes | None, uid: int, gid: int, flags: int
) -> int:
    host = as_given(proc, need_path(path))
    return host_syscall(HOST_SYS_FCHOWNAT, dirfd, host, uid & 0xFFFF_FFFF, gid & 0xFFFF_FFFF, flags)


@syscall("utimensat", DIRFD, PATH, PTR, AT_FLAGS)
def utimensat(proc: GuestProcess, dirfd: int, path: bytes | None, times: int, flags: int) -> int:
    # A NULL path means dirfd itself (futimens). The host validates nanoseconds and flags.
    host_times = None
    if times:
        values = []
        for i in range(2):
            spec = TIMESPEC.unpack(proc.mem.read(times + i * TIMESPEC.size, TIMESPEC.size))
            values += [spec.tv_sec, spec.tv_nsec]
        host_times = (ctypes.c_int64 * 4)(*values)  # x86_64 timespec: two 64-bit words too
    host = None if path is None else as_given(proc, path)
    return host_syscall(HOST_SYS_UTIMENSAT, dirfd, host, host_times, flags)


@syscall("ftruncate", FD, LONG)
def ftruncate(proc: GuestProcess, fd: int, length: int) -> int:
    os.ftruncate(fd, length)
    return 0


@syscall("truncate", PATH, LONG)
def truncate(proc: GuestProcess, path: bytes | None, length: int) -> int:
    return host_syscall(HOST_SYS_TRUNCATE, as_given(proc, need_path(path)), length)


@syscall("fallocate", FD, INT, LONG, LONG)
def fallocate(proc: GuestProcess, fd: int, mode: int, offset: int, length: int) -> int:
    return host_syscall(HOST_SYS_FALLOCATE, fd, mode, offset, length)


@syscall("fsync", FD, blocks=True)
def fsync(proc: GuestProcess, fd: int) -> int:
    os.fsync(fd)
    return 0


@syscall("fdatasync", FD, blocks=True)
def fdatasync(proc: GuestProcess, fd: int) -> int:
    os.fdatasync(fd)
    return 0


@syscall("sync")
def sync(proc: GuestProcess) -> int:
    os.sync()
    return 0


@syscall("syncfs", FD)
def syncfs(proc: GuestProcess, fd: int) -> int:
    return host_syscall(HOST_SYS_SYNCFS, fd)


@syscall("umask", OCTAL)
def umask(proc: GuestProcess, mask: int) -> int:
    previous = os.umask(mask & 0o777)
    proc.umask_value = mask & 0o777
    return previous


# ---- fds -------------------------------------------------------------------------------------


@syscall("dup", FD)
def dup(proc: GuestProcess, fd: int) -> int:
    return host_fcntl.fcntl(fd, abi_fcntl.F_DUPFD, 0)  # os.dup would set FD_CLOEXEC


@syscall("dup3", FD, FD, GUEST_FLAGS)
def dup3(proc: GuestProcess, old: int, new: int, flags: int) -> int:
    if new in proc.host_fd_reserved:
        return -errno.EBADF
    # O_CLOEXEC has one value on every architecture; the host checks the rest (EINVAL)
    return host_syscall(HOST_SYS_DUP3, old, new, flags)


@syscall("pipe2", PTR, GUEST_FLAGS)
def pipe2(proc: GuestProcess, fds: int, flags: int) -> int:
    r, w = os.pipe2(proc.open_codec.to_host(flags))
    try:
        proc.mem.write(fds, FD_PAIR.pack(fd0=r, fd1=w))
    except Exception:
        os.close(r)
        os.close(w)
        raise
    return 0


F_NAMES = {
    abi_fcntl.F_DUPFD: "F_DUPFD",
    abi_fcntl.F_GETFD: "F_GETFD",
    abi_fcntl.F_SETFD: "F_SETFD",
    abi_fcntl.F_GETFL: "F_GETFL",
    abi_fcntl.F_SETFL: "F_SETFL",
    abi_fcntl.F_GETLK: "F_GETLK",
    abi_fcntl.F_SETLK: "F_SETLK",
    abi_fcntl.F_SETLKW: "F_SETLKW",
    abi_fcntl.F_SETOWN: "F_SETOWN",
    abi_fcntl.F_GETOWN: "F_GETOWN",
    abi_fcntl.F_SETSIG: "F_SETSIG",
    abi_fcntl.F_GETSIG: "F_GETSIG",
    abi_fcntl.F_SETOWN_EX: "F_SETOWN_EX",
    abi_fcntl.F_GETOWN_EX: "F_GETOWN_EX",
    abi_fcntl.F_OFD_GETLK: "F_OFD_GETLK",
    abi_fcntl.F_OFD_SETLK: "F_OFD_SETLK",
    abi_fcntl.F_OFD_SETLKW: "F_OFD_SETLKW",
    abi_fcntl.F_SETLEASE: "F_SETLEASE",
    abi_fcntl.F_GETLEASE: "F_GETLEASE",
    abi_fcntl.F_NOTIFY: "F_NOTIFY",
    abi_fcntl.F_CANCELLK: "F_CANCELLK",
    abi_fcntl.F_DUPFD_CLOEXEC: "F_DUPFD_CLOEXEC",
    abi_fcntl.F_SETPIPE_SZ: "F_SETPIPE_SZ",
    abi_fcntl.F_GETPIPE_SZ: "F_GETPIPE_SZ",
    abi_fcntl.F_ADD_SEALS: "F_ADD_SEALS",
    abi_fcntl.F_GET_SEALS: "F_GET_SEALS",
}
LOCK_COMMANDS = {
    abi_fcntl.F_GETLK,
    abi_fcntl.F_SETLK,
    abi_fcntl.F_SETLKW,
    abi_fcntl.F_OFD_GETLK,
    abi_fcntl.F_OFD_SETLK,
    abi_fcntl.F_OFD_SETLKW,
}
LOCK_QUERIES = {abi_fcntl.F_GETLK, abi_fcntl.F_OFD_GETLK}
# Commands whose argument is a plain int, passed to the host unchanged.
INT_COMMANDS = {
    abi_fcntl.F_DUPFD,
    abi_fcntl.F_DUPFD_CLOEXEC,
    abi_fcntl.F_SETOWN,
    abi_fcntl.F_GETOWN,
    abi_fcntl.F_SETSIG,
    abi_fcntl.F_GETSIG,
    abi_fcntl.F_SETLEASE,
    abi_fcntl.F_GETLEASE,
    abi_fcntl.F_NOTIFY,
    abi_fcntl.F_CANCELLK,
    abi_fcntl.F_SETPIPE_SZ,
    abi_fcntl.F_GETPIPE_SZ,
    abi_fcntl.F_ADD_SEALS,
    abi_fcntl.F_GET_SEALS,
    abi_fcntl.F_GETFD,
    abi_fcntl.F_SETFD,
}


@syscall("fcntl", FD, Enum(F_NAMES), ULONG)
def fcntl(proc: GuestProcess, fd: int, cmd: int, arg: int) -> int | None:
    sched = proc.sched
    waits = cmd in (abi_fcntl.F_SETLKW, abi_fcntl.F_OFD_SETLKW)
    if waits and sched.multi and not sched.on_worker():
        # a lock wait may last until another guest thread unlocks (fcntl34): on this thread's
        # worker, as a `blocks` call, so that the others go on
        sched.offload(GENERIC["fcntl"], (fd, cmd, arg))
        proc.uc.emu_stop()
        return None
    if cmd in INT_COMMANDS:
        return host_fcntl.fcntl(fd, cmd, s32(arg))
    if cmd == abi_fcntl.F_GETFL:
        return proc.open_codec.to_guest(host_fcntl.fcntl(fd, cmd))
    if cmd == abi_fcntl.F_SETFL:
        return host_fcntl.fcntl(fd, cmd, proc.open_codec.to_host(arg & 0xFFFF_FFFF))
    if cmd in LOCK_COMMANDS:
        lock = FLOCK.unpack(proc.mem.read(arg, FLOCK.size))
        # the host's call itself: Python's fcntl() retries on EINTR (PEP 475), and a signal
        # must end an F_SETLKW wait as on Linux
        record = ctypes.create_string_buffer(FLOCK.pack(lock), FLOCK.size)
        host_syscall(HOST_SYS_FCNTL, fd, cmd, record)
        answer = FLOCK.unpack(record.raw)
        if cmd in LOCK_QUERIES:
            proc.mem.write(arg, FLOCK.pack(answer))
        return 0
    if cmd == abi_fcntl.F_SETOWN_EX:
        owner = F_OWNER_EX.unpack(proc.mem.read(arg, F_OWNER_EX.size))
        host_fcntl.fcntl(fd, cmd, F_OWNER_EX.pack(owner))
        return 0
    if cmd == abi_fcntl.F_GETOWN_EX:
        owner = F_OWNER_EX.unpack(host_fcntl.fcntl(fd, cmd, bytes(F_OWNER_EX.size)))
        proc.mem.write(arg, F_OWNER_EX.pack(owner))
        return 0
    host_fcntl.fcntl(fd, abi_fcntl.F_GETFD)  # a bad fd is EBADF, as Linux checks it first
    return -errno.EINVAL


@syscall("flock", FD, INT, blocks=True)
def flock(proc: GuestProcess, fd: int, operation: int) -> int:
    # the host's call itself: Python's flock() retries on EINTR (PEP 475), and a signal must
    # end a LOCK_EX wait with EINTR as on Linux (flock07)
    host_syscall(HOST_SYS_FLOCK, fd, operation)
    return 0


# ---- file systems ----------------------------------------------------------------------------


def _guest_statfs(host_record: bytes) -> bytes:
    # x86_64's struct statfs is also asm-generic's 64-bit one: decode with the same layout
    return STATFS.pack(STATFS.unpack(host_record))


@syscall("statfs", PATH, PTR)
def statfs(proc: GuestProcess, path: bytes | None, buf: int) -> int:
    record = ctypes.create_string_buffer(STATFS.size)
    host_syscall(HOST_SYS_STATFS, resolve(proc, need_path(path)), record)
    proc.mem.write(buf, _guest_statfs(record.raw))
    return 0


@syscall("fstatfs", FD, PTR)
def fstatfs(proc: GuestProcess, fd: int, buf: int) -> int:
    record = ctypes.create_string_buffer(STATFS.size)
    host_syscall(HOST_SYS_FSTATFS, fd, record)
    proc.mem.write(buf, _guest_statfs(record.raw))
    return 0


def _read_offset(proc: GuestProcess, pointer: int) -> ctypes.c_int64 | None:
    """A guest loff_t in/out argument as a host one (None for NULL)."""
    if not pointer:
        return None
    return ctypes.c_int64(LOFF_T.unpack(proc.mem.read(pointer, LOFF_T.size)).value)


def _write_offset(proc: GuestProcess, pointer: int, value: ctypes.c_int64 | None) -> None:
    if pointer and value is not None:
        proc.mem.write(pointer, LOFF_T.pack(value=value.value))


@syscall("sendfile", FD, FD, PTR, ULONG, blocks=True)
def sendfile(proc: GuestProcess, out_fd: int, in_fd: int, offset_ptr: int, count: int) -> int:
    offset = _read_offset(proc, offset_ptr)
    n = host_syscall(
        HOST_SYS_SENDFILE,
        out_fd,
        in_fd,
        None if offset is None else ctypes.byref(offset),
        min(count, MAX_RW_COUNT),
    )
    _write_offset(proc, offset_ptr, offset)
    return n


@syscall("copy_file_range", FD, PTR, FD, PTR, ULONG, INT, blocks=True)
def copy_file_range(
    proc: GuestProcess, fd_in: int, off_in: int, fd_out: int, off_out: int, length: int, flags: int
) -> int:
    src = _read_offset(proc, off_in)
    dst = _read_offset(proc, off_out)
    n = host_syscall(
        HOST_SYS_COPY_FILE_RANGE,
        fd_in,
        None if src is None else ctypes.byref(src),
        fd_out,
        None if dst is None else ctypes.byref(dst),
        length,
        flags & 0xFFFF_FFFF,
    )
    _write_offset(proc, off_in, src)
    _write_offset(proc, off_out, dst)
    return n


# ---- splice, tee, vmsplice: the host moves the data between its pipes and files ---------------

SPLICE_FLAGS = Flags(
    {1: "SPLICE_F_MOVE", 2: "SPLICE_F_NONBLOCK", 4: "SPLICE_F_MORE", 8: "SPLICE_F_GIFT"}
)


def _offset_pointer(proc: GuestProcess, pointer: int) -> ctypes.c_int64 | int | None:
    """A loff_t* for the host: None for NULL, an unmapped host address when the guest's
    cannot be read (the host then fails as Linux does, after its own fd checks)."""
    if not pointer:
        return None
    try:
        return _read_offset(proc, pointer)
    except GuestFault:
        return UNMAPPED_HOST_ADDRESS


@syscall("splice", FD, PTR, FD, PTR, ULONG, SPLICE_FLAGS, blocks=True)
def splice(
    proc: GuestProcess, fd_in: int, off_in: int, fd_out: int, off_out: int, length: int, flags: int
) -> int:
    src = _offset_pointer(proc, off_in)
    dst = _offset_pointer(proc, off_out)
    n = host_syscall(
        HOST_SYS_SPLICE,
        fd_in,
        ctypes.byref(src) if isinstance(src, ctypes.c_int64) else src,
        fd_out,
        ctypes.byref(dst) if isinstance(dst, ctypes.c_int64) else dst,
        min(length, MAX_RW_COUNT),
        flags,
    )
    for pointer, value in ((off_in, src), (off_out, dst)):
        if isinstance(value, ctypes.c_int64):
            _write_offset(proc, pointer, value)
    return n


@syscall("tee", FD, FD, ULONG, SPLICE_FLAGS, blocks=True)
def tee(proc: GuestProcess, fd_in: int, fd_out: int, length: int, flags: int) -> int:
    return host_syscall(HOST_SYS_TEE, fd_in, fd_out, min(length, MAX_RW_COUNT), flags)


@syscall("vmsplice", FD, PTR, ULONG, SPLICE_FLAGS, blocks=True)
def vmsplice(proc: GuestProcess, fd: int, iov: int, count: int, flags: int) -> int:
    """Guest memory is host memory: the host splices the guest's own pages (as Linux does,
    a pipe may then hold references to them), or copies into them from a pipe's read end."""
    if count > UIO_MAXIOV:
        return -errno.EINVAL
    into_memory = host_fcntl.fcntl(fd, host_fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    vecs = read_iovec(proc, iov, count)
    direct = host_iovec(proc, vecs, fill=into_memory)
    if direct is not None:
        return host_syscall(HOST_SYS_VMSPLICE, fd, direct, len(vecs), flags)
    # pages that hold code: copies (see AddressSpace.host_span)
    if into_memory:
        check_scatter(proc, vecs)
        total = _iov_total(vecs)
        buffer = ctypes.create_string_buffer(max(total, 1))
        host_iov = (ctypes.c_uint64 * 2)(ctypes.addressof(buffer), total)
        n = host_syscall(HOST_SYS_VMSPLICE, fd, host_iov, 1, flags)
        scatter(proc, vecs, buffer.raw[:n])
        return n
    data = _gather(proc, vecs)
    buffer = ctypes.create_string_buffer(data, max(len(data), 1))
    host_iov = (ctypes.c_uint64 * 2)(ctypes.addressof(buffer), len(data))
    return host_syscall(HOST_SYS_VMSPLICE, fd, host_iov, 1, flags)


# ---- file handles (abi/filehandle.py: the same records on every architecture) ---------------
HANDLE_AT_FLAGS = Flags(
    {
        0x1000: "AT_EMPTY_PATH",
        0x400: "AT_SYMLINK_FOLLOW",
        0x200: "AT_HANDLE_FID",
        AT_HANDLE_MNT_ID_UNIQUE: "AT_HANDLE_MNT_ID_UNIQUE",
    }
)


def _show_handle(proc: GuestProcess, address: int) -> str:
    head = FILE_HANDLE_HEAD.unpack(proc.mem.read(address, FILE_HANDLE_HEAD.size))
    return f"{{handle_bytes={head.handle_bytes}, handle_type={head.handle_type}}}"


def _handle_bytes(proc: GuestProcess, handle: int) -> int:
    return HANDLE_BYTES.unpack(proc.mem.read(handle, HANDLE_BYTES.size)).value


@syscall("name_to_handle_at", DIRFD, PATH, StructOut(_show_handle), PTR, HANDLE_AT_FLAGS)
def name_to_handle_at(
    proc: GuestProcess, dirfd: int, path: bytes | None, handle: int, mount_id: int, flags: int
) -> int:
    path = need_path(path)
    size = _handle_bytes(proc, handle)
    head = FILE_HANDLE_HEAD.size
    # above MAX_HANDLE_SZ the kernel says EINVAL before it looks at the file
    buffer = ctypes.create_string_buffer(head + min(size, MAX_HANDLE_SZ))
    buffer[:head] = FILE_HANDLE_HEAD.pack(handle_bytes=size)
    mount = ctypes.c_uint64()
    try:
        result = host_syscall(
            HOST_SYS_NAME_TO_HANDLE_AT,
            dirfd,
            resolve(proc, path),
            buffer,
            ctypes.byref(mount),
            flags,
        )
    except OSError as exc:
        if exc.errno == errno.EOVERFLOW:  # the size it needs is in handle_bytes
            proc.mem.write(handle, buffer.raw[: HANDLE_BYTES.size])
            # Linux writes the mount id on that path too: a bad pointer is EFAULT there,
            # whatever the size (name_to_handle_at02)
            _write_mount_id(proc, mount_id, mount.value, flags)
        raise
    written = FILE_HANDLE_HEAD.unpack(buffer.raw).handle_bytes
    proc.mem.write(handle, buffer.raw[: head + written])
    _write_mount_id(proc, mount_id, mount.value, flags)
    return result


def _write_mount_id(proc: GuestProcess, address: int, value: int, flags: int) -> None:
    layout = MOUNT_ID_UNIQUE if flags & AT_HANDLE_MNT_ID_UNIQUE else MOUNT_ID
    proc.mem.write(address, layout.pack(value=value if layout is MOUNT_ID_UNIQUE else s32(value)))


# mount_fd may be AT_FDCWD: the mount of the current directory
@syscall("open_by_handle_at", DIRFD, StructIn(_show_handle), OPEN_FLAGS)
def open_by_handle_at(proc: GuestProcess, mount_fd: int, handle: int, flags: int) -> int:
    size = _handle_bytes(proc, handle)
    head = FILE_HANDLE_HEAD.size
    # too big: the host says EINVAL without reading the rest
    data = proc.mem.read(handle, head if size > MAX_HANDLE_SZ else head + size)
    buffer = ctypes.create_string_buffer(data, len(data))
    return host_syscall(
        HOST_SYS_OPEN_BY_HANDLE_AT, mount_fd, buffer, proc.open_codec.to_host(flags)
    )


MFD_NAMES = {
    1: "MFD_CLOEXEC",
    2: "MFD_ALLOW_SEALING",
    4: "MFD_HUGETLB",
    8: "MFD_NOEXEC_SEAL",
    0x10: "MFD_EXEC",
}


@syscall("memfd_create", PATH, Flags(MFD_NAMES))
def memfd_create(proc: GuestProcess, name: bytes | None, flags: int) -> int:
    # MFD_* values are the same everywhere; the kernel checks the name's length and the flags
    return host_syscall(HOST_SYS_MEMFD_CREATE, need_path(name), flags)


# ---- hints and flushing ----------------------------------------------------------------------


# POSIX_FADV_* (include/uapi/linux/fadvise.h): asm-generic values everywhere but s390.
FADVICE = Enum(
    {
        0: "POSIX_FADV_NORMAL",
        1: "POSIX_FADV_RANDOM",
        2: "POSIX_FADV_SEQUENTIAL",
        3: "POSIX_FADV_WILLNEED",
        4: "POSIX_FADV_DONTNEED",
        5: "POSIX_FADV_NOREUSE",
    }
)


@syscall("fadvise64", FD, LONG, LONG, FADVICE)
def fadvise64(proc: GuestProcess, fd: int, offset: int, length: int, advice: int) -> int:
    return host_syscall(HOST_SYS_FADVISE64, fd, offset, length, advice)


@syscall("readahead", FD, LONG, ULONG)
def readahead(proc: GuestProcess, fd: int, offset: int, count: int) -> int:
    return host_syscall(HOST_SYS_READAHEAD, fd, offset, count)


@syscall("sync_file_range", FD, LONG, LONG, INT)
def sync_file_range(proc: GuestProcess, fd: int, offset: int, nbytes: int, flags: int) -> int:
    return host_syscall(HOST_SYS_SYNC_FILE_RANGE, fd, offset, nbytes, flags & 0xFFFF_FFFF)


# ---- extended attributes ---------------------------------------------------------------------
# Names and values are plain bytes and the XATTR_* flags are the same everywhere
# (include/uapi/linux/xattr.h): the host call gets them as they are. By path they follow the
# sysroot rule of lookups; the l* variants do not follow a final symlink.

XATTR_SIZE_MAX = 65536
XATTR_LIST_MAX = 65536


def _xattr_target(proc: GuestProcess, target: int | bytes | None) -> int | bytes:
    """The first argument of an xattr call as the host takes it: an fd, or a looked-up path."""
    if isinstance(target, int):
        return target
    return resolve(proc, need_path(target))


def _getxattr(
    proc: GuestProcess,
    kind: str,
    target: int | bytes | None,
    name: bytes | None,
    value: int,
    size: int,
) -> int:
    host_target = _xattr_target(proc, target)
    size = min(size, XATTR_SIZE_MAX)
    buffer = ctypes.create_string_buffer(max(size, 1)) if size else None
    n = host_syscall(HOST_SYS_XATTR[kind][1], host_target, need_path(name), buffer, size)
    if buffer is not None:
        proc.mem.write(value, buffer.raw[:n])
    return n


def _setxattr(
    proc: GuestProcess,
    kind: str,
    target: int | bytes | None,
    name: bytes | None,
    value: int,
    size: int,
    flags: int,
) -> int:
    host_target = _xattr_target(proc, target)
    if size > XATTR_SIZE_MAX:
        return -errno.E2BIG
    data = proc.mem.read(value, size)
    return host_syscall(HOST_SYS_XATTR[kind][0], host_target, need_path(name), data, size, flags)


def _listxattr(
    proc: GuestProcess, kind: str, target: int | bytes | None, names: int, size: int
) -> int:
    host_target = _xattr_target(proc, target)
    size = min(size, XATTR_LIST_MAX)
    buffer = ctypes.create_string_buffer(max(size, 1)) if size else None
    n = host_syscall(HOST_SYS_XATTR[kind][2], host_target, buffer, size)
    if buffer is not None:
        proc.mem.write(names, buffer.raw[:n])
    return n


def _removexattr(
    proc: GuestProcess, kind: str, target: int | bytes | None, name: bytes | None
) -> int:
    host_target = _xattr_target(proc, target)
    return host_syscall(HOST_SYS_XATTR[kind][3], host_target, need_path(name))


XATTR_FLAGS = Flags({1: "XATTR_CREATE", 2: "XATTR_REPLACE"})


@syscall("getxattr", PATH, PATH, PTR, ULONG)
def getxattr(
    proc: GuestProcess, path: bytes | None, name: bytes | None, value: int, size: int
) -> int:
    return _getxattr(proc, "", path, name, value, size)


@syscall("lgetxattr", PATH, PATH, PTR, ULONG)
def lgetxattr(
    proc: GuestProcess, path: bytes | None, name: bytes | None, value: int, size: int
) -> int:
    return _getxattr(proc, "l", path, name, value, size)


@syscall("fgetxattr", FD, PATH, PTR, ULONG)
def fgetxattr(proc: GuestProcess, fd: int, name: bytes | None, value: int, size: int) -> int:
    return _getxattr(proc, "f", fd, name, value, size)


@syscall("setxattr", PATH, PATH, PTR, ULONG, XATTR_FLAGS)
def setxattr(
    proc: GuestProcess, path: bytes | None, name: bytes | None, value: int, size: int, flags: int
) -> int:
    return _setxattr(proc, "", path, name, value, size, flags)


@syscall("lsetxattr", PATH, PATH, PTR, ULONG, XATTR_FLAGS)
def lsetxattr(
    proc: GuestProcess, path: bytes | None, name: bytes | None, value: int, size: int, flags: int
) -> int:
    return _setxattr(proc, "l", path, name, value, size, flags)


@syscall("fsetxattr", FD, PATH, PTR, ULONG, XATTR_FLAGS)
def fsetxattr(
    proc: GuestProcess, fd: int, name: bytes | None, value: int, size: int, flags: int
) -> int:
    return _setxattr(proc, "f", fd, name, value, size, flags)


@syscall("listxattr", PATH, PTR, ULONG)
def listxattr(proc: GuestProcess, path: bytes | None, names: int, size: int) -> int:
    return _listxattr(proc, "", path, names, size)


@syscall("llistxattr", PATH, PTR, ULONG)
def llistxattr(proc: GuestProcess, path: bytes | None, names: int, size: int) -> int:
    return _listxattr(proc, "l", path, names, size)


@syscall("flistxattr", FD, PTR, ULONG)
def flistxattr(proc: GuestProcess, fd: int, names: int, size: int) -> int:
    return _listxattr(proc, "f", fd, names, size)


@syscall("removexattr", PATH, PATH)
def removexattr(proc: GuestProcess, path: bytes | None, name: bytes | None) -> int:
    return _removexattr(proc, "", path, name)


@syscall("lremovexattr", PATH, PATH)
def lremovexattr(proc: GuestProcess, path: bytes | None, name: bytes | None) -> int:
    return _removexattr(proc, "l", path, name)


@syscall("fremovexattr", FD, PATH)
def fremovexattr(proc: GuestProcess, fd: int, name: bytes | None) -> int:
    return _removexattr(proc, "f", fd, name)
