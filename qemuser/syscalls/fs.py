"""Files and directories: open/read/write/stat and friends.

Guest fds are host fds (as in qemu-user): what the guest opens, the host process holds, so
fork, exec and fd passing need no translation table.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from qemuser.syscalls.abi.stat import pack_stat, pack_statx
from qemuser.syscalls.process import Process
from qemuser.syscalls.registry import (
    AT_FDCWD,
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
    StructOut,
    s32,
    syscall,
)

AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EACCESS = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
HOST_SYS_OPENAT = 257  # x86_64 numbers
HOST_SYS_GETDENTS64 = 217
HOST_SYS_RENAMEAT2 = 316
HOST_SYS_FACCESSAT2 = 439


def host_syscall(number: int, *args: int | ctypes.Array) -> int:
    """A raw host system call; OSError on failure."""
    result = _libc.syscall(ctypes.c_long(number), *(
        a if isinstance(a, ctypes.Array) else ctypes.c_long(a) for a in args
    ))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


class OpenFlagsKind(ArgKind):
    def decode(self, proc: Process, raw: int) -> int:
        return raw & 0xFFFF_FFFF

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
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


OPEN_FLAGS = OpenFlagsKind()
AT_FLAGS = Flags(
    {AT_SYMLINK_NOFOLLOW: "AT_SYMLINK_NOFOLLOW", AT_REMOVEDIR: "AT_REMOVEDIR",
     AT_SYMLINK_FOLLOW: "AT_SYMLINK_FOLLOW", AT_EMPTY_PATH: "AT_EMPTY_PATH",
     0x800: "AT_NO_AUTOMOUNT"}
)
SEEK = Enum({0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"})


def dir_fd(fd: int) -> int | None:
    return None if fd == AT_FDCWD else fd


def resolve(proc: Process, path: bytes) -> bytes:
    """A guest path as the host should see it (sysroot, /proc/self)."""
    special = proc_self_path(proc, path)
    if special is not None:
        return special
    return proc.host_path(path)


def proc_self_path(proc: Process, path: bytes) -> bytes | None:
    for prefix in (b"/proc/self/", f"/proc/{proc.pid}/".encode()):
        if path.startswith(prefix) and path[len(prefix) :] == b"exe":
            return os.fsencode(proc.exe_path)
    return None


def show_stat(proc: Process, addr: int) -> str:
    data = proc.mem.read(addr, 128)
    mode, = struct.unpack_from("<I", data, 16)
    size, = struct.unpack_from("<q", data, 48)
    return f"{{st_mode={_mode_text(mode)},st_size={size},...}}"


def _mode_text(mode: int) -> str:
    kinds = {0o140000: "S_IFSOCK", 0o120000: "S_IFLNK", 0o100000: "S_IFREG",
             0o60000: "S_IFBLK", 0o40000: "S_IFDIR", 0o20000: "S_IFCHR", 0o10000: "S_IFIFO"}
    return f"{kinds.get(mode & 0o170000, '0')}|0{mode & 0o7777:o}"


STAT_OUT = StructOut(show_stat)


# ---- open / close ----------------------------------------------------------------------------


@syscall("openat", DIRFD, PATH, OPEN_FLAGS, OCTAL)
def openat(proc: Process, dirfd: int, path: bytes | None, flags: int, mode: int) -> int:
    if path is None:
        return -errno.EFAULT
    synthetic = proc.open_special(path, flags)
    if synthetic is not None:
        return synthetic
    # Not os.open: Python would add O_CLOEXEC, and the guest's fds must survive its execve.
    host = ctypes.create_string_buffer(resolve(proc, path))
    return host_syscall(HOST_SYS_OPENAT, dirfd, host, proc.open_codec.to_host(flags), mode)


@syscall("close", FD)
def close(proc: Process, fd: int) -> int:
    if fd in proc.host_fd_reserved:
        return -errno.EBADF
    os.close(fd)
    return 0


@syscall("close_range", INT, INT, INT)
def close_range(proc: Process, first: int, last: int, flags: int) -> int:
    last = min(last & 0xFFFF_FFFF, os.sysconf("SC_OPEN_MAX"))
    for fd in range(first & 0xFFFF_FFFF, last + 1):
        if fd in proc.host_fd_reserved:
            continue
        try:
            if flags & 4:  # CLOSE_RANGE_CLOEXEC
                os.set_inheritable(fd, False)
            else:
                os.close(fd)
        except OSError:
            pass
    return 0


# ---- read / write ----------------------------------------------------------------------------


@syscall("read", FD, OutBuf(2), ULONG)
def read(proc: Process, fd: int, buf: int, count: int) -> int:
    proc.mem._check(buf, min(count, 1 << 30), 2) if count else None
    data = os.read(fd, min(count, 1 << 30))
    proc.mem.write(buf, data)
    return len(data)


@syscall("write", FD, InBuf(2), ULONG)
def write(proc: Process, fd: int, buf: int, count: int) -> int:
    return os.write(fd, proc.mem.read(buf, count))


@syscall("pread64", FD, OutBuf(2), ULONG, LONG)
def pread64(proc: Process, fd: int, buf: int, count: int, offset: int) -> int:
    if offset < 0:
        return -errno.EINVAL
    data = os.pread(fd, count, offset)
    proc.mem.write(buf, data)
    return len(data)


@syscall("pwrite64", FD, InBuf(2), ULONG, LONG)
def pwrite64(proc: Process, fd: int, buf: int, count: int, offset: int) -> int:
    if offset < 0:
        return -errno.EINVAL
    return os.pwrite(fd, proc.mem.read(buf, count), offset)


def read_iovec(proc: Process, iov: int, count: int) -> list[tuple[int, int]]:
    """struct iovec[] (include/uapi/linux/uio.h): {void *iov_base; size_t iov_len}."""
    if count < 0 or count > 1024:
        raise OSError(errno.EINVAL, "bad iovcnt")
    data = proc.mem.read(iov, 16 * count)
    return [struct.unpack_from("<QQ", data, 16 * i) for i in range(count)]


def _scatter(proc: Process, vecs: list[tuple[int, int]], data: bytes) -> None:
    pos = 0
    for base, length in vecs:
        if pos >= len(data):
            break
        chunk = data[pos : pos + length]
        proc.mem.write(base, chunk)
        pos += len(chunk)


def _gather(proc: Process, vecs: list[tuple[int, int]]) -> bytes:
    return b"".join(proc.mem.read(base, length) for base, length in vecs)


@syscall("readv", FD, PTR, INT)
def readv(proc: Process, fd: int, iov: int, count: int) -> int:
    vecs = read_iovec(proc, iov, count)
    data = os.read(fd, sum(length for _, length in vecs))
    _scatter(proc, vecs, data)
    return len(data)


@syscall("writev", FD, PTR, INT)
def writev(proc: Process, fd: int, iov: int, count: int) -> int:
    return os.write(fd, _gather(proc, read_iovec(proc, iov, count)))


@syscall("preadv", FD, PTR, INT, LONG)
def preadv(proc: Process, fd: int, iov: int, count: int, offset: int) -> int:
    vecs = read_iovec(proc, iov, count)
    data = os.pread(fd, sum(length for _, length in vecs), offset)
    _scatter(proc, vecs, data)
    return len(data)


@syscall("pwritev", FD, PTR, INT, LONG)
def pwritev(proc: Process, fd: int, iov: int, count: int, offset: int) -> int:
    return os.pwrite(fd, _gather(proc, read_iovec(proc, iov, count)), offset)


@syscall("preadv2", FD, PTR, INT, LONG, LONG, INT)
def preadv2(proc: Process, fd: int, iov: int, count: int, offset: int, _hi: int, flags: int) -> int:
    if offset == -1:
        return readv(proc, fd, iov, count)
    return preadv(proc, fd, iov, count, offset)


@syscall("pwritev2", FD, PTR, INT, LONG, LONG, INT)
def pwritev2(proc: Process, fd: int, iov: int, count: int, offset: int, _hi: int, flags: int) -> int:
    if offset == -1:
        return writev(proc, fd, iov, count)
    return pwritev(proc, fd, iov, count, offset)


@syscall("lseek", FD, LONG, SEEK)
def lseek(proc: Process, fd: int, offset: int, whence: int) -> int:
    return os.lseek(fd, offset, whence)


# ---- stat ------------------------------------------------------------------------------------


def _stat_at(proc: Process, dirfd: int, path: bytes, flags: int) -> os.stat_result:
    follow = not flags & AT_SYMLINK_NOFOLLOW
    if not path:
        if flags & AT_EMPTY_PATH:
            if dirfd == AT_FDCWD:
                return os.stat(".")
            return os.fstat(dirfd)
        raise OSError(errno.ENOENT, "empty path")
    return os.stat(resolve(proc, path), dir_fd=dir_fd(dirfd), follow_symlinks=follow)


@syscall("fstat", FD, STAT_OUT)
def fstat(proc: Process, fd: int, statbuf: int) -> int:
    proc.mem.write(statbuf, pack_stat(os.fstat(fd)))
    return 0


@syscall("newfstatat", DIRFD, PATH, STAT_OUT, AT_FLAGS)
def newfstatat(proc: Process, dirfd: int, path: bytes | None, statbuf: int, flags: int) -> int:
    if path is None:
        return -errno.EFAULT
    proc.mem.write(statbuf, pack_stat(_stat_at(proc, dirfd, path, flags)))
    return 0


@syscall("statx", DIRFD, PATH, AT_FLAGS, Flags({}), PTR)
def statx(proc: Process, dirfd: int, path: bytes | None, flags: int, mask: int, buf: int) -> int:
    if path is None:
        return -errno.EFAULT
    proc.mem.write(buf, pack_statx(_stat_at(proc, dirfd, path, flags)))
    return 0


@syscall("readlinkat", DIRFD, PATH, OutBuf(3), INT)
def readlinkat(proc: Process, dirfd: int, path: bytes | None, buf: int, size: int) -> int:
    if path is None:
        return -errno.EFAULT
    if size <= 0:
        return -errno.EINVAL
    special = proc_self_path(proc, path)
    if special is not None:
        target = special
    else:
        target = os.readlink(proc.host_path(path), dir_fd=dir_fd(dirfd))
    target = target[:size]
    proc.mem.write(buf, target)
    return len(target)


@syscall("faccessat", DIRFD, PATH, OCTAL)
def faccessat(proc: Process, dirfd: int, path: bytes | None, mode: int) -> int:
    return faccessat2(proc, dirfd, path, mode, 0)


@syscall("faccessat2", DIRFD, PATH, OCTAL, AT_FLAGS)
def faccessat2(proc: Process, dirfd: int, path: bytes | None, mode: int, flags: int) -> int:
    if path is None:
        return -errno.EFAULT
    if mode & ~7:
        return -errno.EINVAL
    host = resolve(proc, path)
    buf = ctypes.create_string_buffer(host)
    return host_syscall(HOST_SYS_FACCESSAT2, dirfd, buf, mode, flags)


@syscall("getdents64", FD, PTR, ULONG)
def getdents64(proc: Process, fd: int, dirp: int, count: int) -> int:
    # struct linux_dirent64 is the same on every architecture: pass the host's records through.
    count = min(count, 1 << 20)
    buf = ctypes.create_string_buffer(count)
    n = host_syscall(HOST_SYS_GETDENTS64, fd, buf, count)
    proc.mem.write(dirp, buf.raw[:n])
    return n


# ---- directories and names -------------------------------------------------------------------


@syscall("getcwd", OutBuf(1), ULONG)
def getcwd(proc: Process, buf: int, size: int) -> int:
    cwd = os.getcwdb() + b"\0"
    if size < len(cwd):
        return -errno.ERANGE
    proc.mem.write(buf, cwd)
    return len(cwd)


@syscall("chdir", PATH)
def chdir(proc: Process, path: bytes | None) -> int:
    if path is None:
        return -errno.EFAULT
    os.chdir(resolve(proc, path))
    return 0


@syscall("fchdir", FD)
def fchdir(proc: Process, fd: int) -> int:
    os.fchdir(fd)
    return 0


@syscall("chroot", PATH)
def chroot(proc: Process, path: bytes | None) -> int:
    if path is None:
        return -errno.EFAULT
    os.chroot(resolve(proc, path))
    return 0


@syscall("mkdirat", DIRFD, PATH, OCTAL)
def mkdirat(proc: Process, dirfd: int, path: bytes | None, mode: int) -> int:
    if path is None:
        return -errno.EFAULT
    os.mkdir(proc.host_path(path), mode, dir_fd=dir_fd(dirfd))
    return 0


@syscall("mknodat", DIRFD, PATH, OCTAL, ULONG)
def mknodat(proc: Process, dirfd: int, path: bytes | None, mode: int, dev: int) -> int:
    if path is None:
        return -errno.EFAULT
    os.mknod(proc.host_path(path), mode, dev, dir_fd=dir_fd(dirfd))
    return 0


@syscall("unlinkat", DIRFD, PATH, AT_FLAGS)
def unlinkat(proc: Process, dirfd: int, path: bytes | None, flags: int) -> int:
    if path is None:
        return -errno.EFAULT
    if flags & ~AT_REMOVEDIR:
        return -errno.EINVAL
    if flags & AT_REMOVEDIR:
        os.rmdir(proc.host_path(path), dir_fd=dir_fd(dirfd))
    else:
        os.unlink(proc.host_path(path), dir_fd=dir_fd(dirfd))
    return 0


@syscall("renameat", DIRFD, PATH, DIRFD, PATH)
def renameat(proc: Process, olddir: int, old: bytes | None, newdir: int, new: bytes | None) -> int:
    return renameat2(proc, olddir, old, newdir, new, 0)


@syscall("renameat2", DIRFD, PATH, DIRFD, PATH, Flags({1: "RENAME_NOREPLACE", 2: "RENAME_EXCHANGE", 4: "RENAME_WHITEOUT"}))
def renameat2(
    proc: Process, olddir: int, old: bytes | None, newdir: int, new: bytes | None, flags: int
) -> int:
    if old is None or new is None:
        return -errno.EFAULT
    a = ctypes.create_string_buffer(proc.host_path(old))
    b = ctypes.create_string_buffer(proc.host_path(new))
    return host_syscall(HOST_SYS_RENAMEAT2, olddir, a, newdir, b, flags)


@syscall("symlinkat", PATH, DIRFD, PATH)
def symlinkat(proc: Process, target: bytes | None, dirfd: int, path: bytes | None) -> int:
    if target is None or path is None:
        return -errno.EFAULT
    os.symlink(target, proc.host_path(path), dir_fd=dir_fd(dirfd))
    return 0


@syscall("linkat", DIRFD, PATH, DIRFD, PATH, AT_FLAGS)
def linkat(
    proc: Process, olddir: int, old: bytes | None, newdir: int, new: bytes | None, flags: int
) -> int:
    if old is None or new is None:
        return -errno.EFAULT
    os.link(
        proc.host_path(old), proc.host_path(new), src_dir_fd=dir_fd(olddir),
        dst_dir_fd=dir_fd(newdir), follow_symlinks=bool(flags & AT_SYMLINK_FOLLOW),
    )
    return 0


# ---- attributes ------------------------------------------------------------------------------


@syscall("fchmod", FD, OCTAL)
def fchmod(proc: Process, fd: int, mode: int) -> int:
    os.fchmod(fd, mode)
    return 0


@syscall("fchmodat", DIRFD, PATH, OCTAL)
def fchmodat(proc: Process, dirfd: int, path: bytes | None, mode: int) -> int:
    if path is None:
        return -errno.EFAULT
    os.chmod(resolve(proc, path), mode, dir_fd=dir_fd(dirfd))
    return 0


@syscall("fchown", FD, INT, INT)
def fchown(proc: Process, fd: int, uid: int, gid: int) -> int:
    os.fchown(fd, uid, gid)
    return 0


@syscall("fchownat", DIRFD, PATH, INT, INT, AT_FLAGS)
def fchownat(proc: Process, dirfd: int, path: bytes | None, uid: int, gid: int, flags: int) -> int:
    if path is None:
        return -errno.EFAULT
    if not path and flags & AT_EMPTY_PATH:
        os.fchown(dirfd, uid, gid)
        return 0
    os.chown(
        resolve(proc, path), uid, gid, dir_fd=dir_fd(dirfd),
        follow_symlinks=not flags & AT_SYMLINK_NOFOLLOW,
    )
    return 0


UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


@syscall("utimensat", DIRFD, PATH, PTR, AT_FLAGS)
def utimensat(proc: Process, dirfd: int, path: bytes | None, times: int, flags: int) -> int:
    # struct timespec[2] (include/uapi/linux/time_types.h): {s64 tv_sec; long tv_nsec}
    host_times = ctypes.c_int64 * 4
    if times:
        sec0, ns0, sec1, ns1 = struct.unpack("<qqqq", proc.mem.read(times, 32))
        for ns in (ns0, ns1):
            if ns not in (UTIME_NOW, UTIME_OMIT) and not 0 <= ns < 1_000_000_000:
                return -errno.EINVAL
        tv = host_times(sec0, ns0, sec1, ns1)
    else:
        tv = None
    host_path = ctypes.create_string_buffer(resolve(proc, path)) if path is not None else None
    result = _libc.utimensat(
        ctypes.c_int(dirfd), host_path, tv, ctypes.c_int(flags)
    ) if path is not None else _libc.futimens(ctypes.c_int(dirfd), tv)
    if result < 0:
        return -ctypes.get_errno()
    return 0


@syscall("ftruncate", FD, LONG)
def ftruncate(proc: Process, fd: int, length: int) -> int:
    os.ftruncate(fd, length)
    return 0


@syscall("truncate", PATH, LONG)
def truncate(proc: Process, path: bytes | None, length: int) -> int:
    if path is None:
        return -errno.EFAULT
    os.truncate(resolve(proc, path), length)
    return 0


@syscall("fallocate", FD, INT, LONG, LONG)
def fallocate(proc: Process, fd: int, mode: int, offset: int, length: int) -> int:
    if _libc.fallocate(ctypes.c_int(fd), ctypes.c_int(mode), ctypes.c_long(offset), ctypes.c_long(length)) < 0:
        return -ctypes.get_errno()
    return 0


@syscall("fsync", FD)
def fsync(proc: Process, fd: int) -> int:
    os.fsync(fd)
    return 0


@syscall("fdatasync", FD)
def fdatasync(proc: Process, fd: int) -> int:
    os.fdatasync(fd)
    return 0


@syscall("sync")
def sync(proc: Process) -> int:
    os.sync()
    return 0


@syscall("syncfs", FD)
def syncfs(proc: Process, fd: int) -> int:
    os.fstat(fd)
    os.sync()
    return 0


@syscall("umask", OCTAL)
def umask(proc: Process, mask: int) -> int:
    return os.umask(mask & 0o777)


# ---- fds -------------------------------------------------------------------------------------


@syscall("dup", FD)
def dup(proc: Process, fd: int) -> int:
    import fcntl as host_fcntl

    return host_fcntl.fcntl(fd, host_fcntl.F_DUPFD, 0)  # os.dup would set FD_CLOEXEC


@syscall("dup3", FD, FD, Flags({0o2000000: "O_CLOEXEC"}))
def dup3(proc: Process, old: int, new: int, flags: int) -> int:
    if old == new:
        return -errno.EINVAL
    if flags & ~0o2000000:
        return -errno.EINVAL
    if new in proc.host_fd_reserved:
        return -errno.EBADF
    return os.dup2(old, new, inheritable=not flags & 0o2000000)


@syscall("pipe2", PTR, Flags({0o2000000: "O_CLOEXEC", 0o4000: "O_NONBLOCK", 0o40000: "O_DIRECT"}))
def pipe2(proc: Process, fds: int, flags: int) -> int:
    host_flags = proc.open_codec.to_host(flags)
    r, w = os.pipe2(host_flags)
    try:
        proc.mem.write(fds, struct.pack("<ii", r, w))
    except Exception:
        os.close(r)
        os.close(w)
        raise
    return 0


F_NAMES = {0: "F_DUPFD", 1: "F_GETFD", 2: "F_SETFD", 3: "F_GETFL", 4: "F_SETFL", 5: "F_GETLK",
           6: "F_SETLK", 7: "F_SETLKW", 8: "F_SETOWN", 9: "F_GETOWN", 1030: "F_DUPFD_CLOEXEC",
           1031: "F_SETPIPE_SZ", 1032: "F_GETPIPE_SZ", 1033: "F_ADD_SEALS", 1034: "F_GET_SEALS",
           36: "F_OFD_GETLK", 37: "F_OFD_SETLK", 38: "F_OFD_SETLKW", 1024: "F_SETLEASE",
           1025: "F_GETLEASE"}

# struct flock (include/uapi/asm-generic/fcntl.h, 64-bit): short l_type, short l_whence,
# off_t l_start, off_t l_len, pid_t l_pid  -> 32 bytes. x86_64's layout is the same.
FLOCK_SIZE = 32


@syscall("fcntl", FD, Enum(F_NAMES), ULONG)
def fcntl(proc: Process, fd: int, cmd: int, arg: int) -> int:
    import fcntl as host_fcntl

    if cmd in (0, 1030):  # F_DUPFD, F_DUPFD_CLOEXEC
        return host_fcntl.fcntl(fd, cmd, s32(arg))
    if cmd == 1:
        return host_fcntl.fcntl(fd, cmd)
    if cmd == 2:
        return host_fcntl.fcntl(fd, cmd, arg & 1)
    if cmd == 3:
        return proc.open_codec.to_guest(host_fcntl.fcntl(fd, cmd))
    if cmd == 4:
        return host_fcntl.fcntl(fd, cmd, proc.open_codec.to_host(arg & 0xFFFF_FFFF))
    if cmd in (5, 6, 7, 36, 37, 38):
        lock = proc.mem.read(arg, FLOCK_SIZE)
        result = host_fcntl.fcntl(fd, cmd, lock)
        if cmd in (5, 36):
            proc.mem.write(arg, result)
        return 0
    if cmd in (8, 9, 1031, 1032, 1033, 1034, 1024, 1025, 10, 11):
        return host_fcntl.fcntl(fd, cmd, s32(arg))
    return -errno.EINVAL


@syscall("flock", FD, INT)
def flock(proc: Process, fd: int, operation: int) -> int:
    import fcntl as host_fcntl

    host_fcntl.flock(fd, operation)
    return 0


# ---- file systems ----------------------------------------------------------------------------


def _statfs_bytes(fd: int | None, path: bytes | None) -> bytes:
    # struct statfs (include/uapi/asm-generic/statfs.h, 64-bit): 120 bytes, the same as
    # x86_64's, so the host's record passes through unchanged.
    buf = ctypes.create_string_buffer(120)
    if fd is not None:
        result = _libc.fstatfs(ctypes.c_int(fd), buf)
    else:
        result = _libc.statfs(ctypes.c_char_p(path), buf)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return buf.raw


@syscall("statfs", PATH, PTR)
def statfs(proc: Process, path: bytes | None, buf: int) -> int:
    if path is None:
        return -errno.EFAULT
    proc.mem.write(buf, _statfs_bytes(None, resolve(proc, path)))
    return 0


@syscall("fstatfs", FD, PTR)
def fstatfs(proc: Process, fd: int, buf: int) -> int:
    proc.mem.write(buf, _statfs_bytes(fd, None))
    return 0


@syscall("sendfile", FD, FD, PTR, ULONG)
def sendfile(proc: Process, out_fd: int, in_fd: int, offset_ptr: int, count: int) -> int:
    if offset_ptr:
        offset = struct.unpack("<q", proc.mem.read(offset_ptr, 8))[0]
        n = os.sendfile(out_fd, in_fd, offset, count)
        proc.mem.write(offset_ptr, struct.pack("<q", offset + n))
        return n
    return os.sendfile(out_fd, in_fd, None, count)


@syscall("copy_file_range", FD, PTR, FD, PTR, ULONG, INT)
def copy_file_range(
    proc: Process, fd_in: int, off_in: int, fd_out: int, off_out: int, length: int, flags: int
) -> int:
    src = struct.unpack("<q", proc.mem.read(off_in, 8))[0] if off_in else None
    dst = struct.unpack("<q", proc.mem.read(off_out, 8))[0] if off_out else None
    n = os.copy_file_range(fd_in, fd_out, length, src, dst)
    if off_in:
        proc.mem.write(off_in, struct.pack("<q", src + n))
    if off_out:
        proc.mem.write(off_out, struct.pack("<q", dst + n))
    return n


@syscall("memfd_create", PATH, Flags({1: "MFD_CLOEXEC", 2: "MFD_ALLOW_SEALING"}))
def memfd_create(proc: Process, name: bytes | None, flags: int) -> int:
    if name is None:
        return -errno.EFAULT
    return os.memfd_create(name, flags)
