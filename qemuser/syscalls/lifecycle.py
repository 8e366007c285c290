"""Process life cycle: fork/vfork/clone (fork-like), execve, wait4/waitid.

fork is the host's fork: unicorn's guest memory is ordinary host memory, so the child gets a
copy-on-write copy of the whole guest and carries on inside the same system-call hook.

execve of a foreign ELF (any architecture qemuser knows) stays in this host process: the old
engine is dropped and a new one loads the program, so the pid, the fds and the options
(sysroot, -strace, -d, -cpu) carry over and no binfmt handler is needed. A native program or a
script whose interpreter is native is handed to the host's execve.
"""

from __future__ import annotations

import errno
import fcntl as host_fcntl
import os
import signal
import struct
from dataclasses import replace

from qemuser.loader.elf import LoadError, arch_of_file, check_arch, read_elf_info
from qemuser.loader.memory import GuestFault
from qemuser.syscalls import hostio
from qemuser.syscalls.config import RunConfig
from qemuser.syscalls.process import ExecRequest, Process, host_path_in
from qemuser.syscalls.registry import DIRFD, INT, PATH, PTR, ULONG, Enum, Flags, syscall

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
}


class CloneFlags(Flags):
    """clone flags: the low byte is the exit signal, shown by name."""

    def format(self, proc: Process, raw: int, args: tuple[int, ...], result: int) -> str:
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


def fork_process(
    proc: Process, flags: int, child_stack: int, parent_tid: int, tls: int, child_tid: int
) -> int:
    """A new process, copy of this one; returns the child's pid (parent) or 0 (child)."""
    for stream in (proc.log,):
        stream.flush()
    pid = os.fork()
    if pid:
        proc.on_fork_parent()
        if flags & CLONE_PARENT_SETTID and parent_tid:
            proc.mem.write_u32(parent_tid, pid)
        if flags & CLONE_VFORK:
            # The parent of a vfork sleeps until the child execs or exits. The child runs on
            # a copy of our memory, so waiting only keeps the order programs expect.
            _wait_for_exec_or_exit(proc, pid)
        return pid
    # the child
    proc.pid = os.getpid()
    proc.on_fork_child()
    if child_stack:
        proc.uc.reg_write(proc.spec.sp, child_stack)
    if flags & CLONE_SETTLS:
        proc.uc.reg_write(proc.spec.tls, tls)
    if flags & CLONE_CHILD_SETTID and child_tid:
        proc.mem.write_u32(child_tid, proc.tid)
    if flags & CLONE_CHILD_CLEARTID:
        proc.clear_child_tid = child_tid
    return 0


def _wait_for_exec_or_exit(proc: Process, pid: int) -> None:
    read_end = proc.vfork_pipe_read
    if read_end is None:
        return
    try:
        os.read(read_end, 1)  # EOF when the child execs or exits (the write end closes)
    finally:
        proc.host_fd_reserved.discard(read_end)
        os.close(read_end)
        proc.vfork_pipe_read = None


@syscall("clone", CLONE_FLAGS, PTR, PTR, PTR, PTR)
def clone(
    proc: Process, flags: int, child_stack: int, parent_tid: int, tls: int, child_tid: int
) -> int:
    # asm-generic order (no CONFIG_CLONE_BACKWARDS*): flags, newsp, parent_tidptr, tls,
    # child_tidptr.
    if flags & CLONE_THREAD or (flags & CLONE_VM and not flags & CLONE_VFORK):
        return proc.spawn_thread(flags, child_stack, parent_tid, tls, child_tid)
    if flags & CLONE_VFORK:
        proc.prepare_vfork()
    return fork_process(proc, flags, child_stack, parent_tid, tls, child_tid)


@syscall("clone3", PTR, ULONG)
def clone3(proc: Process, args: int, size: int) -> int:
    # glibc falls back to clone() when clone3 is missing.
    return -errno.ENOSYS


# ---- execve ----------------------------------------------------------------------------------


def _read_string_array(proc: Process, address: int) -> list[bytes]:
    if address == 0:
        return []
    return [proc.mem.read_cstr(p, 1 << 17) for p in proc.mem.read_ptr_array(address)]


def _shebang(path: bytes) -> tuple[bytes, bytes | None] | None:
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip()
    if not line:
        return None
    parts = line.split(None, 1)
    return parts[0], parts[1].strip() if len(parts) > 1 else None


def exec_program(proc: Process, path: bytes, argv: list[bytes], envp: list[bytes]) -> int:
    """execve: returns -errno on failure; on success it does not return."""
    host = proc.resolve_exec_path(path)
    try:
        st = os.stat(host)
    except OSError as exc:
        return -(exc.errno or errno.ENOENT)
    import stat as host_stat

    if host_stat.S_ISDIR(st.st_mode) or not host_stat.S_ISREG(st.st_mode):
        return -errno.EACCES
    if not os.access(host, os.X_OK):
        return -errno.EACCES
    shebang = _shebang(host)
    if shebang is not None:
        interp, arg = shebang
        interp_host = proc.resolve_exec_path(interp)
        interp_arch = arch_of_file(os.fsdecode(interp_host))
        if interp_arch is None:
            return native_exec(proc, host, argv, envp)
        new_argv = [interp] + ([arg] if arg else []) + [path] + argv[1:]
        return foreign_exec(proc, interp_arch, interp_host, interp, new_argv, envp)
    arch = arch_of_file(os.fsdecode(host))
    if arch is None:
        return native_exec(proc, host, argv, envp)
    return foreign_exec(proc, arch, host, path, argv, envp)


def foreign_exec(
    proc: Process, arch: str, host: bytes, guest_path: bytes, argv: list[bytes], envp: list[bytes]
) -> int:
    """execve of a program for `arch` (one qemuser runs): checked here, so that a bad one is
    the guest's -errno, then loaded by a new engine in this same host process."""
    from qemuser.cpu import CPUS

    try:
        info = read_elf_info(os.fsdecode(host))
        check_arch(info, CPUS[arch])
        if info.interp is not None:
            sysroot = proc.config.sysroot if arch == proc.config.arch else _default_sysroot(arch)
            interp = host_path_in(sysroot, info.interp)
            if not os.path.exists(interp):
                return -errno.ENOENT
    except LoadError:
        return -errno.ENOEXEC
    config: RunConfig = replace(
        proc.config,
        arch=arch,
        program=os.fsdecode(host),
        argv=argv,
        env=envp,
        execfn=guest_path,
        exec_fd=None,
        preserve_argv0=False,
        cpu_model=proc.config.cpu_model if arch == proc.config.arch else None,
        sysroot=proc.config.sysroot if arch == proc.config.arch else _default_sysroot(arch),
    )
    proc.before_exec(native=False)
    raise ExecRequest(config)


def _default_sysroot(arch: str) -> str | None:
    env = os.environ.get("QEMU_LD_PREFIX")
    if env:
        return env
    path = f"/usr/{arch}-linux-gnu"
    return path if os.path.isdir(path) else None


def native_exec(proc: Process, host: bytes, argv: list[bytes], envp: list[bytes]) -> int:
    proc.before_exec(native=True)
    env = dict(e.split(b"=", 1) if b"=" in e else (e, b"") for e in envp)
    try:
        os.execve(host, argv or [host], env)
    except OSError as exc:
        return -(exc.errno or errno.ENOEXEC)
    return 0  # not reached


@syscall("execve", PATH, PTR, PTR)
def execve(proc: Process, path: bytes | None, argv_ptr: int, envp_ptr: int) -> int:
    if path is None:
        return -errno.EFAULT
    try:
        argv = _read_string_array(proc, argv_ptr)
        envp = _read_string_array(proc, envp_ptr)
    except GuestFault:
        return -errno.EFAULT
    return exec_program(proc, path, argv, envp)


AT_EMPTY_PATH = 0x1000


@syscall("execveat", DIRFD, PATH, PTR, PTR, INT)
def execveat(
    proc: Process, dirfd: int, path: bytes | None, argv_ptr: int, envp_ptr: int, flags: int
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


@syscall("wait4", INT, PTR, WAIT_FLAGS, PTR)
def wait4(proc: Process, pid: int, status_ptr: int, options: int, rusage_ptr: int) -> int:
    if options & ~(1 | 2 | 8 | 0x20000000 | 0x40000000 | 0x80000000):
        return -errno.EINVAL
    # hostio: a signal interrupts the wait as it would on Linux (os.wait4 would retry)
    child, status, rusage = hostio.wait4(pid, options & 0xFFFF_FFFF)
    if child and status_ptr:
        proc.mem.write(status_ptr, struct.pack("<i", status))
    if child and rusage_ptr:
        proc.mem.write(rusage_ptr, rusage)  # struct rusage: same 64-bit layout as the host's
    return child


P_NAMES = {0: "P_ALL", 1: "P_PID", 2: "P_PGID", 3: "P_PIDFD"}


@syscall("waitid", Enum(P_NAMES), INT, PTR, WAIT_FLAGS, PTR)
def waitid(
    proc: Process, idtype: int, ident: int, info_ptr: int, options: int, rusage_ptr: int
) -> int:
    result = os.waitid(idtype, ident, options & 0xFFFF_FFFF)
    if info_ptr:
        # siginfo_t (include/uapi/asm-generic/siginfo.h), 128 bytes: si_signo, si_errno,
        # si_code, then the SIGCHLD union at offset 16: pid, uid, status.
        if result is None:
            proc.mem.write(info_ptr, bytes(128))
        else:
            head = struct.pack(
                "<iiiiIIi",
                result.si_signo,
                0,
                result.si_code,
                0,
                result.si_pid,
                result.si_uid,
                result.si_status,
            )
            proc.mem.write(info_ptr, head + bytes(128 - len(head)))
    return 0


def close_on_exec_fds(keep: set[int]) -> None:
    """Close the fds marked FD_CLOEXEC, as the kernel does at execve."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc (a chroot without it): try every possible descriptor
        import resource

        open_fds = list(range(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
    for fd in open_fds:
        if fd in keep:
            continue
        try:
            if host_fcntl.fcntl(fd, host_fcntl.F_GETFD) & host_fcntl.FD_CLOEXEC:
                os.close(fd)
        except OSError:
            pass
