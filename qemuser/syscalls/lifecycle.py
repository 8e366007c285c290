"""Process life cycle calls: fork/vfork/clone (fork-like), execve, wait4/waitid.

The machinery behind them is the runtime's (qemuser.user.spawn, reached through the process's
fork and exec_program): fork is the host's fork, and execve of a foreign ELF stays in this host
process with a new engine, so the pid, the fds and the options (sysroot, -strace, -d, -cpu)
carry over and no binfmt handler is needed. A native program or a script whose interpreter is
native is handed to the host's execve.
"""

from __future__ import annotations

import errno
import fcntl as host_fcntl
import os
import signal
from typing import TYPE_CHECKING

from qemuser.host import libc as host_libc
from qemuser.host.libc import host_syscall
from qemuser.host.sysnums import HOST_SYS_SETNS, HOST_SYS_UNSHARE
from qemuser.loader.memory import GuestFault
from qemuser.syscalls.abi.resources import RUSAGE
from qemuser.syscalls.abi.scalars import INT as C_INT
from qemuser.syscalls.abi.siginfo import SIGINFO_SIZE, SiginfoChld, pack_siginfo
from qemuser.syscalls.argkinds import DIRFD, INT, PATH, PTR, ULONG, Enum, Flags
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

CLONE_VM = 0x100
CLONE_FS = 0x200
CLONE_FILES = 0x400
CLONE_SIGHAND = 0x800
CLONE_PIDFD = 0x1000
CLONE_PTRACE = 0x2000
CLONE_VFORK = 0x4000
CLONE_PARENT = 0x8000
CLONE_THREAD = 0x10000
CLONE_NEWNS = 0x20000
CLONE_SYSVSEM = 0x40000
CLONE_SETTLS = 0x80000
CLONE_PARENT_SETTID = 0x100000
CLONE_CHILD_CLEARTID = 0x200000
CLONE_DETACHED = 0x400000
CLONE_UNTRACED = 0x800000
CLONE_CHILD_SETTID = 0x1000000
CLONE_NEWCGROUP = 0x2000000
CLONE_NEWUTS = 0x4000000
CLONE_NEWIPC = 0x8000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEW_ANY = (
    CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
)

CLONE_NAMES = {
    CLONE_VM: "CLONE_VM",
    CLONE_FS: "CLONE_FS",
    CLONE_FILES: "CLONE_FILES",
    CLONE_SIGHAND: "CLONE_SIGHAND",
    CLONE_PIDFD: "CLONE_PIDFD",
    CLONE_PTRACE: "CLONE_PTRACE",
    CLONE_VFORK: "CLONE_VFORK",
    CLONE_PARENT: "CLONE_PARENT",
    CLONE_THREAD: "CLONE_THREAD",
    CLONE_NEWNS: "CLONE_NEWNS",
    CLONE_SYSVSEM: "CLONE_SYSVSEM",
    CLONE_SETTLS: "CLONE_SETTLS",
    CLONE_PARENT_SETTID: "CLONE_PARENT_SETTID",
    CLONE_CHILD_CLEARTID: "CLONE_CHILD_CLEARTID",
    CLONE_DETACHED: "CLONE_DETACHED",
    CLONE_UNTRACED: "CLONE_UNTRACED",
    CLONE_CHILD_SETTID: "CLONE_CHILD_SETTID",
    CLONE_NEWCGROUP: "CLONE_NEWCGROUP",
    CLONE_NEWUTS: "CLONE_NEWUTS",
    CLONE_NEWIPC: "CLONE_NEWIPC",
    CLONE_NEWUSER: "CLONE_NEWUSER",
    CLONE_NEWPID: "CLONE_NEWPID",
    CLONE_NEWNET: "CLONE_NEWNET",
}


class CloneFlags(Flags):
    """clone flags: the low byte is the exit signal, shown by name."""

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        flags = super().format(proc, raw & ~0xFF, args, result)
        exit_signal = raw & 0xFF
        if not exit_signal:
            return flags
        try:
            name = signal.Signals(exit_signal).name
        except ValueError:
            name = str(exit_signal)
        return name if flags == "0" else f"{flags}|{name}"


CLONE_FLAGS = CloneFlags(CLONE_NAMES)


@syscall("clone", CLONE_FLAGS, PTR, PTR, PTR, PTR)
def clone(
    proc: GuestProcess, flags: int, child_stack: int, parent_tid: int, tls: int, child_tid: int
) -> int:
    # asm-generic order (no CONFIG_CLONE_BACKWARDS*): flags, newsp, parent_tidptr, tls,
    # child_tidptr.
    if flags & CLONE_THREAD or (flags & CLONE_VM and not flags & CLONE_VFORK):
        if flags & CLONE_NEW_ANY:
            # a guest thread takes turns on the emulator's host thread: it cannot be in
            # namespaces of its own. Refused, as qemu-user refuses it (clone09's CLONE_VM)
            return -errno.EINVAL
        return proc.spawn_thread(flags, child_stack, parent_tid, tls, child_tid)
    if flags & CLONE_NEW_ANY:
        return _fork_into_namespaces(proc, flags, child_stack, parent_tid, tls, child_tid)
    if flags & CLONE_VFORK:
        proc.prepare_vfork()
    return proc.fork(flags, child_stack, parent_tid, tls, child_tid)


def _fork_into_namespaces(
    proc: GuestProcess, flags: int, child_stack: int, parent_tid: int, tls: int, child_tid: int
) -> int:
    """clone() with CLONE_NEW* flags: the child in new namespaces (clone09), made by the host.
    A new pid namespace is the parent's to make (unshare makes it the one of its next child,
    who is pid 1 there; setns then gives the parent its own back); the others the child makes
    for itself with unshare before any guest code runs, and tells the parent how that went
    through a pipe, so that a refusal (EPERM, EINVAL) is the clone's error with no child."""
    own = flags & CLONE_NEW_ANY & ~CLONE_NEWPID
    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    old_pid_ns = None
    pid = -1
    try:
        if flags & CLONE_NEWPID:
            old_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            host_syscall(HOST_SYS_UNSHARE, CLONE_NEWPID)
        if flags & CLONE_VFORK:
            proc.prepare_vfork()
        pid = proc.fork(flags, child_stack, parent_tid, tls, child_tid)
    except BaseException:
        for fd in (report_read, report_write):
            os.close(fd)
        pid = -1
        raise
    finally:
        if old_pid_ns is not None:
            if pid != 0:  # the parent's children are in its own pid namespace again
                host_syscall(HOST_SYS_SETNS, old_pid_ns, CLONE_NEWPID)
            os.close(old_pid_ns)
    if pid == 0:  # the child
        os.close(report_read)
        code = 0
        if own:
            try:
                host_syscall(HOST_SYS_UNSHARE, own)
            except OSError as exc:
                code = exc.errno or errno.EINVAL
        os.write(report_write, code.to_bytes(4, "little"))
        os.close(report_write)
        if code:
            os._exit(0)
        return 0
    os.close(report_write)
    try:
        answer = os.read(report_read, 4)
    finally:
        os.close(report_read)
    code = int.from_bytes(answer, "little") if len(answer) == 4 else errno.EINVAL
    if code:
        os.waitpid(pid, 0)  # the child that could not be: gone before anyone sees it
        return -code
    return pid


@syscall("clone3", PTR, ULONG)
def clone3(proc: GuestProcess, args: int, size: int) -> int:
    # glibc falls back to clone() when clone3 is missing.
    return -errno.ENOSYS


# ---- execve ----------------------------------------------------------------------------------


def _read_string_array(proc: GuestProcess, address: int) -> list[bytes]:
    if address == 0:
        return []
    return [proc.mem.read_cstr(p, 1 << 17) for p in proc.mem.read_ptr_array(address)]


F_SETLEASE = 1024
F_RDLCK = 0
F_UNLCK = 2


def _open_for_writing(host_path: bytes) -> bool:
    """Whether some process has the file open for writing, which makes Linux's execve fail
    with ETXTBSY (execve04). qemuser reads the program rather than executing it, so the host
    never checks: a read lease asks instead, since the host refuses one (EAGAIN) exactly when
    the file has writers. Anything else it says (no lease rights, not a regular file, leases
    off) tells nothing, and the exec goes on."""
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False  # the exec itself reports what is wrong with the path
    try:
        host_fcntl.fcntl(fd, F_SETLEASE, F_RDLCK)
    except OSError as exc:
        return exc.errno == errno.EAGAIN
    else:
        host_fcntl.fcntl(fd, F_SETLEASE, F_UNLCK)
        return False
    finally:
        os.close(fd)


@syscall("execve", PATH, PTR, PTR)
def execve(proc: GuestProcess, path: bytes | None, argv_ptr: int, envp_ptr: int) -> int:
    if path is None:
        return -errno.EFAULT
    try:
        argv = _read_string_array(proc, argv_ptr)
        envp = _read_string_array(proc, envp_ptr)
    except GuestFault:
        return -errno.EFAULT
    if _open_for_writing(proc.host_path(path)):
        return -errno.ETXTBSY
    return proc.exec_program(path, argv, envp)


AT_EMPTY_PATH = 0x1000


@syscall("execveat", DIRFD, PATH, PTR, PTR, INT)
def execveat(
    proc: GuestProcess, dirfd: int, path: bytes | None, argv_ptr: int, envp_ptr: int, flags: int
) -> int:
    if path is None:
        return -errno.EFAULT
    if not path and flags & AT_EMPTY_PATH:
        target = f"/proc/self/fd/{dirfd}".encode()
        target = os.fsencode(os.readlink(target))
    elif path.startswith(b"/") or dirfd == -100:
        target = path
    else:
        target = os.fsencode(os.readlink(f"/proc/self/fd/{dirfd}")) + b"/" + path
    return execve(proc, target, argv_ptr, envp_ptr)


# ---- wait ------------------------------------------------------------------------------------

WAIT_FLAGS = Flags(
    {
        1: "WNOHANG",
        2: "WUNTRACED",
        4: "WEXITED",
        8: "WCONTINUED",
        0x01000000: "WNOWAIT",
        0x20000000: "__WNOTHREAD",
        0x40000000: "__WALL",
        0x80000000: "__WCLONE",
    }
)


@syscall("wait4", INT, PTR, WAIT_FLAGS, PTR, blocks=True)
def wait4(proc: GuestProcess, pid: int, status_ptr: int, options: int, rusage_ptr: int) -> int:
    if options & ~(1 | 2 | 8 | 0x20000000 | 0x40000000 | 0x80000000):
        return -errno.EINVAL
    # host_libc: a signal interrupts the wait as it would on Linux (os.wait4 would retry)
    child, status, rusage = host_libc.wait4(pid, options & 0xFFFF_FFFF)
    if child and status_ptr:
        proc.mem.write(status_ptr, C_INT.pack(value=status))
    if child and rusage_ptr:
        # the x86_64 host's struct rusage has the guest's layout: decoded and re-encoded
        proc.mem.write(rusage_ptr, RUSAGE.pack(RUSAGE.unpack(rusage)))
    return child


P_NAMES = {0: "P_ALL", 1: "P_PID", 2: "P_PGID", 3: "P_PIDFD"}


@syscall("waitid", Enum(P_NAMES), INT, PTR, WAIT_FLAGS, PTR, blocks=True)
def waitid(
    proc: GuestProcess, idtype: int, ident: int, info_ptr: int, options: int, rusage_ptr: int
) -> int:
    result = os.waitid(idtype, ident, options & 0xFFFF_FFFF)
    if info_ptr:
        # the _sigchld member of siginfo_t (Python's waitid gives no utime/stime: zero)
        if result is None:
            proc.mem.write(info_ptr, bytes(SIGINFO_SIZE))
        else:
            info = SiginfoChld(
                si_signo=result.si_signo,
                si_errno=0,
                si_code=result.si_code,
                si_pid=result.si_pid,
                si_uid=result.si_uid,
                si_status=result.si_status,
                si_utime=0,
                si_stime=0,
            )
            proc.mem.write(info_ptr, pack_siginfo(info))
    return 0
