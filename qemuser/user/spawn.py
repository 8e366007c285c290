"""fork and execve in the user-mode runtime: what the clone and execve calls do
(qemuser.syscalls.lifecycle declares them).

fork is the host's fork: unicorn's guest memory is ordinary host memory, so the child gets a
copy-on-write copy of the whole guest and carries on inside the same system-call hook.
execve of a foreign ELF (any architecture qemuser knows) stays in this host process: the old
engine is dropped and a new one loads the program (ExecRequest unwinds to user/run.py), so the
pid, the fds and the options carry over. A native program or a script whose interpreter is
native is handed to the host's execve.
"""

from __future__ import annotations

import errno
import fcntl as host_fcntl
import os
from dataclasses import replace
from typing import TYPE_CHECKING

from qemuser.cpu import CPUS
from qemuser.loader.elf import LoadError, arch_of_file, check_arch, read_elf_info
from qemuser.user.config import RunConfig
from qemuser.user.runtime import ExecRequest, host_path_in

if TYPE_CHECKING:
    from qemuser.user.runtime import RuntimeProcess


def fork_process(
    proc: RuntimeProcess, flags: int, child_stack: int, parent_tid: int, tls: int, child_tid: int
) -> int:
    """A new process, copy of this one; returns the child's pid (parent) or 0 (child)."""
    # here, not at the top: the clone declarations are imported with the guest's first clone
    from qemuser.syscalls.lifecycle import (
        CLONE_CHILD_CLEARTID,
        CLONE_CHILD_SETTID,
        CLONE_PARENT_SETTID,
        CLONE_SETTLS,
        CLONE_VFORK,
    )

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


def _wait_for_exec_or_exit(proc: RuntimeProcess, pid: int) -> None:
    read_end = proc.vfork_pipe_read
    if read_end is None:
        return
    try:
        os.read(read_end, 1)  # EOF when the child execs or exits (the write end closes)
    finally:
        proc.host_fd_reserved.discard(read_end)
        os.close(read_end)
        proc.vfork_pipe_read = None


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


def exec_program(proc: RuntimeProcess, path: bytes, argv: list[bytes], envp: list[bytes]) -> int:
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
    proc: RuntimeProcess,
    arch: str,
    host: bytes,
    guest_path: bytes,
    argv: list[bytes],
    envp: list[bytes],
) -> int:
    """execve of a program for `arch` (one qemuser runs): checked here, so that a bad one is
    the guest's -errno, then loaded by a new engine in this same host process."""
    # a program of another arch gets that arch's own sysroot and default CPU model
    other_arch = arch != proc.config.arch
    sysroot = _default_sysroot(arch) if other_arch else proc.config.sysroot
    try:
        info = read_elf_info(os.fsdecode(host))
        check_arch(info, CPUS[arch])
        if info.interp is not None:
            # opened as the kernel opens it: ENOENT, or EACCES for a FIFO or a non-executable
            read_elf_info(os.fsdecode(host_path_in(sysroot, info.interp)))
    except LoadError as exc:
        return -exc.errno
    config: RunConfig = replace(
        proc.config,
        arch=arch,
        program=os.fsdecode(host),
        argv=argv,
        env=envp,
        execfn=guest_path,
        exec_fd=None,
        preserve_argv0=False,
        cpu_model=None if other_arch else proc.config.cpu_model,
        sysroot=sysroot,
    )
    proc.before_exec(native=False)
    raise ExecRequest(config)


def _default_sysroot(arch: str) -> str | None:
    env = os.environ.get("QEMU_LD_PREFIX")
    if env:
        return env
    path = f"/usr/{arch}-linux-gnu"
    return path if os.path.isdir(path) else None


def native_exec(proc: RuntimeProcess, host: bytes, argv: list[bytes], envp: list[bytes]) -> int:
    proc.before_exec(native=True)
    env = dict(e.split(b"=", 1) if b"=" in e else (e, b"") for e in envp)
    try:
        os.execve(host, argv or [host], env)
    except OSError as exc:
        return -(exc.errno or errno.ENOEXEC)
    return 0  # not reached


def close_on_exec_fds(keep: set[int]) -> None:
    """Close the fds marked FD_CLOEXEC, as the kernel does at execve."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc (a chroot without it)
        from qemuser.host.fds import open_fds_by_poll

        open_fds = open_fds_by_poll()
    for fd in open_fds:
        if fd in keep:
            continue
        try:
            if host_fcntl.fcntl(fd, host_fcntl.F_GETFD) & host_fcntl.FD_CLOEXEC:
                os.close(fd)
        except OSError:
            pass
