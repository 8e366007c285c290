"""What a process shares and with whom: unshare, setns, kcmp, and mount/umount2.

Each guest process is a host process, and its descriptors and pids are the host's, so these
are the host's calls on this process: the namespaces it leaves (unshare) or joins (setns) are
the guest's from then on, and the children it forks inherit them. Their flags (CLONE_NEW*,
MS_*, MNT_*, KCMP_*) are the same numbers on every architecture. Two differences from a
kernel of the guest's own, both the host's doing: unshare(CLONE_NEWUSER) and setns() into a
user namespace want a single-threaded process, and the emulator has host threads of its own
once the guest has several (EINVAL); and kcmp(KCMP_VM) sees every guest thread, and a CLONE_VM
child that is not a thread, in one host process.

mount and umount2 pass the mount point through the sysroot (-L) as the other path calls look a
file up (but "/" stays the root: the sysroot is where files are looked up first, not the guest's
root), and the source too when it is a path (MS_BIND, MS_MOVE); a device or "none" goes as it
is. The data is a NUL-terminated option string for every file system that takes one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qemuser.host.libc import host_syscall
from qemuser.host.sysnums import (
    HOST_SYS_KCMP,
    HOST_SYS_MOUNT,
    HOST_SYS_SETNS,
    HOST_SYS_UMOUNT2,
    HOST_SYS_UNSHARE,
)
from qemuser.syscalls.abi.schedattr import KCMP_EPOLL_SLOT
from qemuser.syscalls.argkinds import FD, INT, PATH, PTR, ULONG, Enum, Flags
from qemuser.syscalls.fs import resolve
from qemuser.syscalls.guestbuf import copy_in
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

MS_BIND = 0x1000
MS_MOVE = 0x2000
MOUNT_FLAGS = Flags(
    {
        0x1: "MS_RDONLY", 0x2: "MS_NOSUID", 0x4: "MS_NODEV", 0x8: "MS_NOEXEC",
        0x10: "MS_SYNCHRONOUS", 0x20: "MS_REMOUNT", 0x40: "MS_MANDLOCK", 0x80: "MS_DIRSYNC",
        0x100: "MS_NOSYMFOLLOW", 0x400: "MS_NOATIME", 0x800: "MS_NODIRATIME",
        MS_BIND: "MS_BIND", MS_MOVE: "MS_MOVE", 0x4000: "MS_REC", 0x8000: "MS_SILENT",
        0x10000: "MS_POSIXACL", 0x20000: "MS_UNBINDABLE", 0x40000: "MS_PRIVATE",
        0x80000: "MS_SLAVE", 0x100000: "MS_SHARED", 0x200000: "MS_RELATIME",
        0x1000000: "MS_STRICTATIME", 0x2000000: "MS_LAZYTIME",
    }
)  # fmt: skip
UMOUNT_FLAGS = Flags({1: "MNT_FORCE", 2: "MNT_DETACH", 4: "MNT_EXPIRE", 8: "UMOUNT_NOFOLLOW"})
# the CLONE_* flags unshare and setns take (include/uapi/linux/sched.h)
NAMESPACE_FLAGS = Flags(
    {0x80: "CLONE_NEWTIME", 0x200: "CLONE_FS", 0x400: "CLONE_FILES", 0x20000: "CLONE_NEWNS",
     0x40000: "CLONE_SYSVSEM", 0x2000000: "CLONE_NEWCGROUP", 0x4000000: "CLONE_NEWUTS",
     0x8000000: "CLONE_NEWIPC", 0x10000000: "CLONE_NEWUSER", 0x20000000: "CLONE_NEWPID",
     0x40000000: "CLONE_NEWNET", 0x100: "CLONE_VM", 0x800: "CLONE_SIGHAND",
     0x10000: "CLONE_THREAD"}
)  # fmt: skip
KCMP_EPOLL_TFD = 7
KCMP_TYPES = Enum(
    {0: "KCMP_FILE", 1: "KCMP_VM", 2: "KCMP_FILES", 3: "KCMP_FS", 4: "KCMP_SIGHAND",
     5: "KCMP_IO", 6: "KCMP_SYSVSEM", KCMP_EPOLL_TFD: "KCMP_EPOLL_TFD"}
)  # fmt: skip


@syscall("unshare", NAMESPACE_FLAGS)
def unshare(proc: GuestProcess, flags: int) -> int:
    return host_syscall(HOST_SYS_UNSHARE, flags)


@syscall("setns", FD, NAMESPACE_FLAGS)
def setns(proc: GuestProcess, fd: int, nstype: int) -> int:
    return host_syscall(HOST_SYS_SETNS, fd, nstype)


@syscall("kcmp", INT, INT, KCMP_TYPES, ULONG, ULONG)
def kcmp(proc: GuestProcess, pid1: int, pid2: int, kind: int, idx1: int, idx2: int) -> int:
    if kind == KCMP_EPOLL_TFD:  # idx2 points to a struct kcmp_epoll_slot
        slot = copy_in(proc, idx2, KCMP_EPOLL_SLOT.size)
        return host_syscall(HOST_SYS_KCMP, pid1, pid2, kind, idx1, slot)
    return host_syscall(HOST_SYS_KCMP, pid1, pid2, kind, idx1, idx2)


def _mount_path(proc: GuestProcess, path: bytes | None) -> bytes | None:
    """A mount point (or a bind's source) as a path call looks it up: in the sysroot first,
    except the root itself, which is the whole namespace to the guest (mount --make-rprivate
    /), never the sysroot's directory."""
    if path is None or not path.strip(b"/") and path.startswith(b"/"):
        return path
    return resolve(proc, path)


def _string(proc: GuestProcess, address: int) -> bytes | None:
    return proc.mem.read_cstr(address, 4096) if address else None


@syscall("mount", PATH, PATH, PATH, MOUNT_FLAGS, PTR)
def mount(
    proc: GuestProcess,
    source: bytes | None,
    target: bytes | None,
    fstype: bytes | None,
    flags: int,
    data: int,
) -> int:
    if flags & (MS_BIND | MS_MOVE):
        source = _mount_path(proc, source)
    return host_syscall(
        HOST_SYS_MOUNT,
        source,
        _mount_path(proc, target),
        fstype,
        flags,
        _string(proc, data),
    )


@syscall("umount2", PATH, UMOUNT_FLAGS)
def umount2(proc: GuestProcess, target: bytes | None, flags: int) -> int:
    return host_syscall(HOST_SYS_UMOUNT2, _mount_path(proc, target), flags)
