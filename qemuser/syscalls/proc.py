"""Process identity, limits and exit (single process; fork/threads/signals come separately)."""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import struct
from typing import TYPE_CHECKING

from qemuser.host.libc import LIBC, UNMAPPED_HOST_ADDRESS, host_syscall
from qemuser.host.sysnums import (
    HOST_SYS_CAPGET,
    HOST_SYS_CAPSET,
    HOST_SYS_GET_ROBUST_LIST,
    HOST_SYS_GETCPU,
    HOST_SYS_PRLIMIT64,
    HOST_SYS_SCHED_GETAFFINITY,
    HOST_SYS_SETFSGID,
    HOST_SYS_SETFSUID,
    HOST_SYS_SYSINFO,
)
from qemuser.loader.fault import GuestFault
from qemuser.syscalls.abi.capability import (
    CAP_DATA,
    CAP_HEADER,
    CAP_VERSION_NAMES,
    CAP_VERSION_WORD,
    cap_data_count,
)
from qemuser.syscalls.abi.futex import ROBUST_LIST_HEAD
from qemuser.syscalls.abi.resources import RLIM_INFINITY, RLIMIT64, RUSAGE, RUSAGE_COUNTERS
from qemuser.syscalls.abi.sysinfo import SYSINFO, UTSNAME
from qemuser.syscalls.argkinds import INT, PTR, ULONG, Enum, Flags, Ret, StructIn, StructOut, s32
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess


@syscall("exit", INT, ret=Ret.NONE)
def exit_(proc: GuestProcess, status: int) -> int:
    # the calling thread ends; the last thread's exit ends the process
    proc.exit_thread(status)
    return 0


@syscall("exit_group", INT, ret=Ret.NONE)
def exit_group(proc: GuestProcess, status: int) -> int:
    proc.request_exit(status)
    return 0


@syscall("getpid")
def getpid(proc: GuestProcess) -> int:
    return os.getpid()


@syscall("getppid")
def getppid(proc: GuestProcess) -> int:
    # a CLONE_VM child that is not a thread runs in this host process: its parent is the
    # guest that made it, not this process's parent
    return proc.sched.running().parent_pid or os.getppid()


@syscall("gettid")
def gettid(proc: GuestProcess) -> int:
    return proc.tid


@syscall("set_tid_address", PTR)
def set_tid_address(proc: GuestProcess, tidptr: int) -> int:
    proc.clear_child_tid = tidptr
    return proc.tid


@syscall("set_robust_list", PTR, ULONG)
def set_robust_list(proc: GuestProcess, head: int, length: int) -> int:
    if length != ROBUST_LIST_HEAD.size:
        return -errno.EINVAL
    proc.robust_list = (head, length)
    return 0


@syscall("get_robust_list", INT, PTR, PTR)
def get_robust_list(proc: GuestProcess, pid: int, head_ptr: int, len_ptr: int) -> int:
    if pid not in (0, os.getpid()) and pid not in proc.sched.threads:
        # another process: the host checks that it exists (ESRCH) and that we may look at it
        # (EPERM, ptrace's read access), as Linux does (get_robust_list01). What it holds
        # is the host's list of that process: a guest's own list lives in its emulator.
        head = ctypes.c_uint64()
        length = ctypes.c_uint64()
        host_syscall(HOST_SYS_GET_ROBUST_LIST, pid, ctypes.byref(head), ctypes.byref(length))
        proc.mem.write_u64(head_ptr, head.value)
        proc.mem.write_u64(len_ptr, length.value)
        return 0
    proc.mem.write_u64(head_ptr, proc.robust_list[0])
    proc.mem.write_u64(len_ptr, ROBUST_LIST_HEAD.size)
    return 0


@syscall("rseq", PTR, INT, INT, INT)
def rseq(proc: GuestProcess, rseq_addr: int, length: int, flags: int, sig: int) -> int:
    # Restartable sequences need the kernel to abort critical sections on preemption; glibc
    # copes with ENOSYS by not registering one.
    return -errno.ENOSYS


@syscall("getuid")
def getuid(proc: GuestProcess) -> int:
    return os.getuid()


@syscall("geteuid")
def geteuid(proc: GuestProcess) -> int:
    return os.geteuid()


@syscall("getgid")
def getgid(proc: GuestProcess) -> int:
    return os.getgid()


@syscall("getegid")
def getegid(proc: GuestProcess) -> int:
    return os.getegid()


@syscall("getresuid", PTR, PTR, PTR)
def getresuid(proc: GuestProcess, ruid: int, euid: int, suid: int) -> int:
    for addr, value in zip((ruid, euid, suid), os.getresuid()):
        proc.mem.write_u32(addr, value)
    return 0


@syscall("getresgid", PTR, PTR, PTR)
def getresgid(proc: GuestProcess, rgid: int, egid: int, sgid: int) -> int:
    for addr, value in zip((rgid, egid, sgid), os.getresgid()):
        proc.mem.write_u32(addr, value)
    return 0


@syscall("getgroups", INT, PTR)
def getgroups(proc: GuestProcess, size: int, groups: int) -> int:
    host = os.getgroups()
    if size < 0:
        return -errno.EINVAL
    if size == 0:
        return len(host)
    if size < len(host):
        return -errno.EINVAL
    proc.mem.write(groups, struct.pack(f"<{len(host)}I", *host))
    return len(host)


@syscall("setgroups", INT, PTR)
def setgroups(proc: GuestProcess, size: int, groups: int) -> int:
    if size < 0 or size > 65536:
        return -errno.EINVAL
    values = struct.unpack(f"<{size}I", proc.mem.read(groups, 4 * size)) if size else ()
    os.setgroups(list(values))
    return 0


def _id(value: int) -> int:
    return -1 if value in (-1, 0xFFFF_FFFF) else value


@syscall("setuid", INT)
def setuid(proc: GuestProcess, uid: int) -> int:
    os.setuid(uid)
    return 0


@syscall("setgid", INT)
def setgid(proc: GuestProcess, gid: int) -> int:
    os.setgid(gid)
    return 0


@syscall("setreuid", INT, INT)
def setreuid(proc: GuestProcess, ruid: int, euid: int) -> int:
    os.setreuid(_id(ruid), _id(euid))
    return 0


@syscall("setregid", INT, INT)
def setregid(proc: GuestProcess, rgid: int, egid: int) -> int:
    os.setregid(_id(rgid), _id(egid))
    return 0


@syscall("setresuid", INT, INT, INT)
def setresuid(proc: GuestProcess, r: int, e: int, s: int) -> int:
    os.setresuid(_id(r), _id(e), _id(s))
    return 0


@syscall("setresgid", INT, INT, INT)
def setresgid(proc: GuestProcess, r: int, e: int, s: int) -> int:
    os.setresgid(_id(r), _id(e), _id(s))
    return 0


# setfsuid/setfsgid: the host's, which answer the previous id whether or not they change it
# (-1 only asks). The ids belong to the calling host thread: the engine's, where a guest that
# never made a thread makes every call; a multi-threaded guest's calls on its workers (the
# `blocks` ones, openat among them) keep the ids the workers had.
@syscall("setfsuid", INT)
def setfsuid(proc: GuestProcess, uid: int) -> int:
    return host_syscall(HOST_SYS_SETFSUID, uid & 0xFFFF_FFFF)


@syscall("setfsgid", INT)
def setfsgid(proc: GuestProcess, gid: int) -> int:
    return host_syscall(HOST_SYS_SETFSGID, gid & 0xFFFF_FFFF)


def _show_uname(proc: GuestProcess, addr: int) -> str:
    names = UTSNAME.unpack(proc.mem.read(addr, UTSNAME.size))
    sysname = names.sysname.rstrip(b"\0").decode()
    machine = names.machine.rstrip(b"\0").decode()
    return f"{{sysname={sysname!r}, machine={machine!r}, ...}}"


@syscall("uname", StructOut(_show_uname))
def uname(proc: GuestProcess, buf: int) -> int:
    host = os.uname()
    domain = b"(none)"
    try:
        with open("/proc/sys/kernel/domainname", "rb") as f:
            domain = f.read().strip()
    except OSError:
        pass
    proc.mem.write(
        buf,
        UTSNAME.pack(
            sysname=host.sysname.encode(),
            nodename=host.nodename.encode(),
            release=host.release.encode(),
            version=host.version.encode(),
            machine=proc.linux.uname_machine.encode(),
            domainname=domain,
        ),
    )
    return 0


@syscall("sethostname", PTR, INT)
def sethostname(proc: GuestProcess, name: int, length: int) -> int:
    import socket

    socket.sethostname(proc.mem.read(name, length))
    return 0


# ---- limits ----------------------------------------------------------------------------------

RLIMIT_NAMES = {
    0: "RLIMIT_CPU",
    1: "RLIMIT_FSIZE",
    2: "RLIMIT_DATA",
    3: "RLIMIT_STACK",
    4: "RLIMIT_CORE",
    5: "RLIMIT_RSS",
    6: "RLIMIT_NPROC",
    7: "RLIMIT_NOFILE",
    8: "RLIMIT_MEMLOCK",
    9: "RLIMIT_AS",
    10: "RLIMIT_LOCKS",
    11: "RLIMIT_SIGPENDING",
    12: "RLIMIT_MSGQUEUE",
    13: "RLIMIT_NICE",
    14: "RLIMIT_RTPRIO",
    15: "RLIMIT_RTTIME",
}
RLIMIT = Enum(RLIMIT_NAMES)


def _rlim_to_guest(value: int) -> int:
    return RLIM_INFINITY if value == resource.RLIM_INFINITY or value < 0 else value


def _rlim_to_host(value: int) -> int:
    return resource.RLIM_INFINITY if value == RLIM_INFINITY else value


# Limits that would bind the emulator rather than the guest if the host applied them: the
# guest's stack is ours (-s), and its address space and data segment are a few of the host's
# mappings among unicorn's own. They are kept here, per host process (so fork and execve keep
# them, as Linux keeps rlimits), and reported back; qemu-user, too, leaves them off the host.
EMULATED_LIMITS = (resource.RLIMIT_STACK, resource.RLIMIT_AS, resource.RLIMIT_DATA)
_emulated_limits: dict[int, tuple[int, int]] = {}


def _read_rlimit(proc: GuestProcess, addr: int) -> tuple[int, int]:
    limit = RLIMIT64.unpack(proc.mem.read(addr, RLIMIT64.size))
    return limit.rlim_cur, limit.rlim_max


def _write_rlimit(proc: GuestProcess, addr: int, soft: int, hard: int) -> None:
    proc.mem.write(addr, RLIMIT64.pack(rlim_cur=soft, rlim_max=hard))


def _host_set_limit(pid: int, which: int, soft: int, hard: int) -> tuple[int, int]:
    """The host's prlimit64 setting a limit (struct rlimit64 is the same there, RLIM_INFINITY
    included); the previous one. Not Python's resource module: it turns the host's EPERM
    (raising a hard limit unprivileged, RLIMIT_NOFILE past nr_open) into ValueError."""
    new = ctypes.create_string_buffer(RLIMIT64.pack(rlim_cur=soft, rlim_max=hard))
    old = ctypes.create_string_buffer(RLIMIT64.size)
    host_syscall(HOST_SYS_PRLIMIT64, pid, which, new, old)
    previous = RLIMIT64.unpack(old.raw)
    return previous.rlim_cur, previous.rlim_max


def _get_limit(proc: GuestProcess, which: int) -> tuple[int, int]:
    if which in _emulated_limits:
        return _emulated_limits[which]
    soft, hard = resource.getrlimit(which)
    soft, hard = _rlim_to_guest(soft), _rlim_to_guest(hard)
    if which == resource.RLIMIT_STACK:
        soft = min(proc.config.stack_size, hard)  # the stack the guest really has
    return soft, hard


def _set_emulated_limit(proc: GuestProcess, which: int, soft: int, hard: int) -> None:
    _, current_hard = _get_limit(proc, which)
    if hard > current_hard and os.geteuid() != 0:
        raise OSError(errno.EPERM, "raising a hard limit needs CAP_SYS_RESOURCE")
    _emulated_limits[which] = (soft, hard)


def _show_rlimit(proc: GuestProcess, addr: int) -> str:
    soft, hard = _read_rlimit(proc, addr)
    show = lambda v: "RLIM_INFINITY" if v == RLIM_INFINITY else str(v)  # noqa: E731
    return f"{{rlim_cur={show(soft)},rlim_max={show(hard)}}}"


@syscall("prlimit64", INT, RLIMIT, StructIn(_show_rlimit), StructOut(_show_rlimit))
def prlimit64(proc: GuestProcess, pid: int, which: int, new: int, old: int) -> int:
    if which not in RLIMIT_NAMES:
        return -errno.EINVAL
    if pid not in (0, os.getpid()):
        # another process: the host's limits are its own
        if new:
            soft, hard = _read_rlimit(proc, new)
            previous = _host_set_limit(pid, which, soft, hard)
        else:
            previous = tuple(map(_rlim_to_guest, resource.prlimit(pid, which)))
        if old:
            _write_rlimit(proc, old, *previous)
        return 0
    current = _get_limit(proc, which)
    if new:
        soft, hard = _read_rlimit(proc, new)
        if soft > hard:
            return -errno.EINVAL
        if which in EMULATED_LIMITS:
            _set_emulated_limit(proc, which, soft, hard)
        else:
            _host_set_limit(0, which, soft, hard)
    if old:
        _write_rlimit(proc, old, *current)
    return 0


@syscall("getrlimit", RLIMIT, StructOut(_show_rlimit))
def getrlimit(proc: GuestProcess, which: int, old: int) -> int:
    return prlimit64(proc, 0, which, 0, old)


@syscall("setrlimit", RLIMIT, StructIn(_show_rlimit))
def setrlimit(proc: GuestProcess, which: int, new: int) -> int:
    return prlimit64(proc, 0, which, new, 0)


def _pack_rusage(ru: resource.struct_rusage) -> bytes:
    user_sec, user_usec = divmod(round(ru.ru_utime * 1_000_000), 1_000_000)
    system_sec, system_usec = divmod(round(ru.ru_stime * 1_000_000), 1_000_000)
    counters = {f"ru_{name}": getattr(ru, f"ru_{name}") for name in RUSAGE_COUNTERS}
    return RUSAGE.pack(
        ru_utime_sec=user_sec,
        ru_utime_usec=user_usec,
        ru_stime_sec=system_sec,
        ru_stime_usec=system_usec,
        **counters,
    )


@syscall("getrusage", Enum({0: "RUSAGE_SELF", -1: "RUSAGE_CHILDREN", 1: "RUSAGE_THREAD"}), PTR)
def getrusage(proc: GuestProcess, who: int, usage: int) -> int:
    host_who = {0: resource.RUSAGE_SELF, -1: resource.RUSAGE_CHILDREN, 1: resource.RUSAGE_THREAD}
    if who not in host_who:
        return -errno.EINVAL
    proc.mem.write(usage, _pack_rusage(resource.getrusage(host_who[who])))
    return 0


@syscall("sysinfo", PTR)
def sysinfo(proc: GuestProcess, info: int) -> int:
    host = ctypes.create_string_buffer(SYSINFO.size)
    host_syscall(HOST_SYS_SYSINFO, host)
    # x86_64's struct sysinfo has the same fields and sizes: decoded and re-encoded
    proc.mem.write(info, SYSINFO.pack(SYSINFO.unpack(host.raw)))
    return 0


@syscall(
    "getrandom",
    PTR,
    ULONG,
    Flags({1: "GRND_NONBLOCK", 2: "GRND_RANDOM", 4: "GRND_INSECURE"}),
    blocks=True,
)
def getrandom(proc: GuestProcess, buf: int, length: int, flags: int) -> int:
    if flags & ~7 or flags & 6 == 6:  # GRND_INSECURE with GRND_RANDOM is EINVAL too
        return -errno.EINVAL
    length = min(length, 1 << 25)
    proc.mem.write(buf, os.getrandom(length, flags & 3))
    return length


# ---- scheduling ------------------------------------------------------------------------------


@syscall("sched_getaffinity", INT, ULONG, PTR)
def sched_getaffinity(proc: GuestProcess, pid: int, size: int, mask: int) -> int:
    # The host's own call: its checks (size against nr_cpu_ids, a multiple of a long) and its
    # result (the bytes it wrote) are what the guest should see; cpu masks are arrays of longs
    # on both sides.
    host = ctypes.create_string_buffer(max(min(size, 1 << 16), 8))
    written = host_syscall(HOST_SYS_SCHED_GETAFFINITY, pid, min(size, 1 << 16), host)
    proc.mem.write(mask, host.raw[:written])
    return written


@syscall("sched_setaffinity", INT, ULONG, PTR)
def sched_setaffinity(proc: GuestProcess, pid: int, size: int, mask: int) -> int:
    value = int.from_bytes(proc.mem.read(mask, size), "little")
    cpus = {i for i in range(size * 8) if value >> i & 1}
    os.sched_setaffinity(pid, cpus)
    return 0


@syscall("sched_yield")
def sched_yield(proc: GuestProcess) -> int:
    os.sched_yield()
    return 0


@syscall("getcpu", PTR, PTR, PTR)
def getcpu(proc: GuestProcess, cpu: int, node: int, cache: int) -> int:
    host = (ctypes.c_uint32 * 2)()
    host_syscall(HOST_SYS_GETCPU, ctypes.addressof(host), ctypes.addressof(host) + 4, 0)
    if cpu:
        proc.mem.write_u32(cpu, host[0])
    if node:
        proc.mem.write_u32(node, host[1])
    return 0


@syscall("sched_getscheduler", INT)
def sched_getscheduler(proc: GuestProcess, pid: int) -> int:
    return os.sched_getscheduler(pid)


@syscall("sched_getparam", INT, PTR)
def sched_getparam(proc: GuestProcess, pid: int, param: int) -> int:
    if pid < 0 or not param:
        return -errno.EINVAL  # checked before anything is looked at (sched_getparam03)
    proc.mem.write_u32(param, os.sched_getparam(pid).sched_priority)
    return 0


# include/uapi/linux/sched.h: policies are the same numbers on every arch, so they pass as
# they are; struct sched_param (include/uapi/linux/sched/types.h) is one int.
SCHED_POLICY = Enum(
    {
        0: "SCHED_OTHER",
        1: "SCHED_FIFO",
        2: "SCHED_RR",
        3: "SCHED_BATCH",
        5: "SCHED_IDLE",
        6: "SCHED_DEADLINE",
    }
)


def _read_sched_param(proc: GuestProcess, param: int) -> os.sched_param:
    return os.sched_param(s32(proc.mem.read_u32(param)))


@syscall("sched_setscheduler", INT, INT, PTR)
def sched_setscheduler(proc: GuestProcess, pid: int, policy: int, param: int) -> int:
    if pid < 0 or not param:
        return -errno.EINVAL
    os.sched_setscheduler(pid, policy, _read_sched_param(proc, param))
    return 0


@syscall("sched_setparam", INT, PTR)
def sched_setparam(proc: GuestProcess, pid: int, param: int) -> int:
    if pid < 0 or not param:
        return -errno.EINVAL
    os.sched_setparam(pid, _read_sched_param(proc, param))
    return 0


@syscall("sched_get_priority_max", SCHED_POLICY)
def sched_get_priority_max(proc: GuestProcess, policy: int) -> int:
    return os.sched_get_priority_max(policy)


@syscall("sched_get_priority_min", SCHED_POLICY)
def sched_get_priority_min(proc: GuestProcess, policy: int) -> int:
    return os.sched_get_priority_min(policy)


@syscall("sched_rr_get_interval", INT, PTR)
def sched_rr_get_interval(proc: GuestProcess, pid: int, interval: int) -> int:
    from qemuser.syscalls.clock import write_timespec

    if pid < 0:
        return -errno.EINVAL
    write_timespec(proc, interval, round(os.sched_rr_get_interval(pid) * 1_000_000_000))
    return 0


@syscall("getpriority", INT, INT)
def getpriority(proc: GuestProcess, which: int, who: int) -> int:
    # The kernel returns 20 - nice so that the result is never negative.
    return 20 - os.getpriority(which, who)


@syscall("setpriority", INT, INT, INT)
def setpriority(proc: GuestProcess, which: int, who: int, prio: int) -> int:
    os.setpriority(which, who, prio)
    return 0


# ---- prctl -----------------------------------------------------------------------------------

PR_NAMES = {
    1: "PR_SET_PDEATHSIG",
    2: "PR_GET_PDEATHSIG",
    3: "PR_GET_DUMPABLE",
    4: "PR_SET_DUMPABLE",
    7: "PR_GET_KEEPCAPS",
    8: "PR_SET_KEEPCAPS",
    15: "PR_SET_NAME",
    16: "PR_GET_NAME",
    21: "PR_GET_SECCOMP",
    22: "PR_SET_SECCOMP",
    24: "PR_CAPBSET_DROP",
    29: "PR_SET_TIMERSLACK",
    30: "PR_GET_TIMERSLACK",
    40: "PR_GET_TID_ADDRESS",
    41: "PR_SET_THP_DISABLE",
    42: "PR_GET_THP_DISABLE",
    36: "PR_SET_CHILD_SUBREAPER",
    37: "PR_GET_CHILD_SUBREAPER",
    38: "PR_SET_NO_NEW_PRIVS",
    39: "PR_GET_NO_NEW_PRIVS",
    23: "PR_CAPBSET_READ",
    47: "PR_CAP_AMBIENT",
    50: "PR_SVE_SET_VL",
    51: "PR_SVE_GET_VL",
    54: "PR_PAC_RESET_KEYS",
    0x59616D61: "PR_SET_PTRACER",
    1398164801: "PR_SET_VMA",
}


PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_SET_NAME = 15
PR_GET_NAME = 16
PR_GET_SECCOMP = 21
PR_GET_CHILD_SUBREAPER = 37
PR_GET_TID_ADDRESS = 40
PR_SET_VMA = 0x53564D41
TASK_COMM_LEN = 16
# Options whose arguments are plain numbers and whose effect is on the process as a whole:
# the host process is the guest's, so the host applies them (signal numbers included: the
# asm-generic ones are x86_64's). include/uapi/linux/prctl.h
PASSED_TO_HOST = frozenset(
    {
        PR_SET_PDEATHSIG,
        3,
        4,  # PR_GET_DUMPABLE, PR_SET_DUMPABLE
        7,
        8,  # PR_GET_KEEPCAPS, PR_SET_KEEPCAPS
        23,
        24,  # PR_CAPBSET_READ, PR_CAPBSET_DROP
        27,
        28,  # PR_GET_SECUREBITS, PR_SET_SECUREBITS (prctl02: EPERM without CAP_SETPCAP)
        29,
        30,  # PR_SET_TIMERSLACK, PR_GET_TIMERSLACK
        36,  # PR_SET_CHILD_SUBREAPER
        38,
        39,  # PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS
        41,
        42,  # PR_SET_THP_DISABLE, PR_GET_THP_DISABLE
        47,  # PR_CAP_AMBIENT
        0x59616D61,  # PR_SET_PTRACER
    }
)
# Options that return an int through the pointer in arg2.
INT_OUT_OPTIONS = frozenset({PR_GET_PDEATHSIG, PR_GET_CHILD_SUBREAPER})

_libc = LIBC


def _host_prctl(option: int, *args: int) -> int:
    padded = [*args, 0, 0, 0, 0][:4]
    result = _libc.prctl(option, *(ctypes.c_ulong(a) for a in padded))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


PR_SVE_SET_VL, PR_SVE_GET_VL = 50, 51
PR_SVE_VL_LEN_MASK, PR_SVE_VL_INHERIT, PR_SVE_SET_VL_ONEXEC = 0xFFFF, 1 << 17, 1 << 18
_sve_inherit = False  # PR_SVE_VL_INHERIT, per host process (the guest's threads share it)


def _sve_prctl(proc: GuestProcess, option: int, arg: int) -> int:
    """PR_SVE_SET_VL / PR_SVE_GET_VL as arch/arm64/kernel/fpsimd.c answers them on a CPU
    with one vector length (qemuser.cpu.aarch64.SVE_VECTOR_BYTES): a valid request is rounded
    to it; the result is the length, with PR_SVE_VL_INHERIT when that is set."""
    global _sve_inherit
    from qemuser.cpu.aarch64 import SVE_VECTOR_BYTES, sve_supported

    if proc.spec.name != "aarch64" or not sve_supported(proc.uc):
        return -errno.EINVAL  # no SVE: the kernel refuses both
    if option == PR_SVE_SET_VL:
        vl, flags = arg & PR_SVE_VL_LEN_MASK, arg & ~PR_SVE_VL_LEN_MASK
        if flags & ~(PR_SVE_VL_INHERIT | PR_SVE_SET_VL_ONEXEC):
            return -errno.EINVAL
        if vl % 16 or not 1 <= vl // 16 <= 512:  # sve_vl_valid
            return -errno.EINVAL
        # min(vl, SVE_VL_ARCH_MAX), then the supported length at or below it, else the
        # smallest one: with a single supported length, always that one
        _sve_inherit = bool(flags & PR_SVE_VL_INHERIT)
    return SVE_VECTOR_BYTES | (PR_SVE_VL_INHERIT if _sve_inherit else 0)


PR_PAC_RESET_KEYS = 54


def _pac_reset_keys(proc: GuestProcess, keys: int, *rest: int) -> int:
    """PR_PAC_RESET_KEYS (arch/arm64/kernel/pointer_auth.c): new random keys, all of them
    for 0, else those of the mask; EINVAL without PAuth, for other bits, for a key the core
    lacks, or when arguments 3-5 are not 0 (kernel/sys.c)."""
    from qemuser.cpu.aarch64 import (
        PAC_ADDRESS_KEYS,
        PAC_GENERIC_KEY,
        pauth_present,
        set_random_keys,
    )

    if proc.spec.name != "aarch64" or any(rest):
        return -errno.EINVAL
    address, generic = pauth_present(proc.uc)
    if not (address or generic) or keys & ~(PAC_ADDRESS_KEYS | PAC_GENERIC_KEY):
        return -errno.EINVAL
    if keys == 0:
        keys = (PAC_ADDRESS_KEYS if address else 0) | (PAC_GENERIC_KEY if generic else 0)
    elif (keys & PAC_ADDRESS_KEYS and not address) or (keys & PAC_GENERIC_KEY and not generic):
        return -errno.EINVAL
    set_random_keys(proc.uc, keys)
    return 0


@syscall("prctl", Enum(PR_NAMES), ULONG, ULONG, ULONG, ULONG)
def prctl(proc: GuestProcess, option: int, a2: int, a3: int, a4: int, a5: int) -> int:
    if option in (PR_SVE_SET_VL, PR_SVE_GET_VL):
        return _sve_prctl(proc, option, a2)
    if option == PR_PAC_RESET_KEYS:
        return _pac_reset_keys(proc, a2, a3, a4, a5)
    if option == PR_SET_NAME:
        name = proc.mem.read_cstr(a2, TASK_COMM_LEN)[: TASK_COMM_LEN - 1]
        proc.thread_name = name
        # the host's comm too (ps, top, /proc/<pid>/comm); the buffer must outlive the call
        host_name = ctypes.create_string_buffer(name, TASK_COMM_LEN)
        _host_prctl(PR_SET_NAME, ctypes.addressof(host_name))
        return 0
    if option == PR_GET_NAME:
        proc.mem.write(a2, proc.thread_name.ljust(TASK_COMM_LEN, b"\0")[:TASK_COMM_LEN])
        return 0
    if option in INT_OUT_OPTIONS:
        value = ctypes.c_int(0)
        _host_prctl(option, ctypes.addressof(value))
        proc.mem.write_u32(a2, value.value)
        return 0
    if option == PR_GET_TID_ADDRESS:
        proc.mem.write_u64(a2, proc.clear_child_tid)
        return 0
    if option in PASSED_TO_HOST:
        return _host_prctl(option, a2, a3, a4, a5)
    if option == PR_GET_SECCOMP:
        return 0  # no seccomp filter: the guest's system calls are ours
    if option == PR_SET_VMA:
        return 0  # naming anonymous memory: accepted, not shown in maps
    return -errno.EINVAL


# The execution domain personality() last set: kept for the guest, never given to the host,
# whose ADDR_LIMIT_32BIT or READ_IMPLIES_EXEC would change the emulator's own mappings. It
# starts as the persona the emulator inherited (as a program inherits its parent's: a shell
# under `setarch -R` passes ADDR_NO_RANDOMIZE down). One per host process, so a fork keeps it.
_persona: int | None = None
STICKY_TIMEOUTS = 0x4000000  # select/pselect6/ppoll leave the caller's timeout alone


def current_persona() -> int:
    """The guest's persona (include/uapi/linux/personality.h)."""
    global _persona
    if _persona is None:
        _persona = _libc.personality(ctypes.c_ulong(0xFFFF_FFFF)) & 0xFFFF_FFFF
    return _persona


@syscall("personality", ULONG)
def personality(proc: GuestProcess, persona: int) -> int:
    global _persona
    previous = current_persona()
    persona &= 0xFFFF_FFFF
    if persona != 0xFFFF_FFFF:  # that value only asks
        _persona = persona
    return previous


@syscall("getpgid", INT)
def getpgid(proc: GuestProcess, pid: int) -> int:
    return os.getpgid(pid)


@syscall("getsid", INT)
def getsid(proc: GuestProcess, pid: int) -> int:
    return os.getsid(pid)


@syscall("setpgid", INT, INT)
def setpgid(proc: GuestProcess, pid: int, pgid: int) -> int:
    os.setpgid(pid, pgid)
    return 0


@syscall("setsid")
def setsid(proc: GuestProcess) -> int:
    return os.setsid()


# ---- capabilities ----------------------------------------------------------------------------
# The guest's capabilities are the host process's own: the host kernel answers
# (abi/capability.py: the records are the same for both).


def _show_cap_header(proc: GuestProcess, address: int) -> str:
    header = CAP_HEADER.unpack(proc.mem.read(address, CAP_HEADER.size))
    version = CAP_VERSION_NAMES.get(header.version, hex(header.version))
    return f"{{version={version}, pid={header.pid}}}"


def _show_cap_data(proc: GuestProcess, address: int) -> str:
    data = CAP_DATA.unpack(proc.mem.read(address, CAP_DATA.size))
    return (
        f"{{effective={data.effective:#x}, permitted={data.permitted:#x},"
        f" inheritable={data.inheritable:#x}}}"
    )


def _cap_header(proc: GuestProcess, address: int) -> tuple[int, ctypes.Array]:
    """The header's version, and the header as a host buffer (the kernel writes its own
    version there when it does not know the guest's)."""
    header = CAP_HEADER.unpack(proc.mem.read(address, CAP_HEADER.size))
    pid = 0 if header.pid == proc.tid else header.pid  # a guest tid need not be the host's
    packed = CAP_HEADER.pack(version=header.version, pid=pid)
    return header.version, ctypes.create_string_buffer(packed, len(packed))


def _give_back_version(proc: GuestProcess, address: int, host_header: ctypes.Array) -> None:
    version = CAP_HEADER.unpack(host_header.raw).version
    proc.mem.write(address, CAP_VERSION_WORD.pack(value=version))


@syscall("capget", StructIn(_show_cap_header), StructOut(_show_cap_data))
def capget(proc: GuestProcess, header: int, data: int) -> int:
    version, host_header = _cap_header(proc, header)
    host_data = ctypes.create_string_buffer(CAP_DATA.size * cap_data_count(version))
    try:
        result = host_syscall(HOST_SYS_CAPGET, host_header, host_data if data else None)
    finally:  # an unknown version: the kernel names its own (EINVAL, or 0 with no data)
        _give_back_version(proc, header, host_header)
    if data:
        proc.mem.write(data, host_data.raw)
    return result


@syscall("capset", StructIn(_show_cap_header), StructIn(_show_cap_data))
def capset(proc: GuestProcess, header: int, data: int) -> int:
    version, host_header = _cap_header(proc, header)
    try:
        host_data: object = ctypes.create_string_buffer(
            proc.mem.read(data, CAP_DATA.size * cap_data_count(version))
        )
    except GuestFault:
        host_data = UNMAPPED_HOST_ADDRESS  # the host's EFAULT, after its version check
    try:
        return host_syscall(HOST_SYS_CAPSET, host_header, host_data)
    finally:
        _give_back_version(proc, header, host_header)
