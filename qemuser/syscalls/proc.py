"""Process identity, limits and exit (single process; fork/threads/signals come separately)."""

from __future__ import annotations

import errno
import os
import resource
import struct

from qemuser.syscalls.abi.layout import Layout
from qemuser.syscalls.process import Process
from qemuser.syscalls.registry import INT, PTR, ULONG, Enum, Flags, Ret, StructIn, StructOut, syscall


@syscall("exit", INT, ret=Ret.NONE)
def exit_(proc: Process, status: int) -> int:
    # A single-threaded process: the last thread's exit ends the process.
    proc.request_exit(status)
    return 0


@syscall("exit_group", INT, ret=Ret.NONE)
def exit_group(proc: Process, status: int) -> int:
    proc.request_exit(status)
    return 0


@syscall("getpid")
def getpid(proc: Process) -> int:
    return os.getpid()


@syscall("getppid")
def getppid(proc: Process) -> int:
    return os.getppid()


@syscall("gettid")
def gettid(proc: Process) -> int:
    return proc.tid


@syscall("set_tid_address", PTR)
def set_tid_address(proc: Process, tidptr: int) -> int:
    proc.clear_child_tid = tidptr
    return proc.tid


@syscall("set_robust_list", PTR, ULONG)
def set_robust_list(proc: Process, head: int, length: int) -> int:
    if length != 24:  # sizeof(struct robust_list_head)
        return -errno.EINVAL
    proc.robust_list = (head, length)
    return 0


@syscall("get_robust_list", INT, PTR, PTR)
def get_robust_list(proc: Process, pid: int, head_ptr: int, len_ptr: int) -> int:
    proc.mem.write_u64(head_ptr, proc.robust_list[0])
    proc.mem.write_u64(len_ptr, 24)
    return 0


@syscall("rseq", PTR, INT, INT, INT)
def rseq(proc: Process, rseq_addr: int, length: int, flags: int, sig: int) -> int:
    # Restartable sequences need the kernel to abort critical sections on preemption; glibc
    # copes with ENOSYS by not registering one.
    return -errno.ENOSYS


@syscall("getuid")
def getuid(proc: Process) -> int:
    return os.getuid()


@syscall("geteuid")
def geteuid(proc: Process) -> int:
    return os.geteuid()


@syscall("getgid")
def getgid(proc: Process) -> int:
    return os.getgid()


@syscall("getegid")
def getegid(proc: Process) -> int:
    return os.getegid()


@syscall("getresuid", PTR, PTR, PTR)
def getresuid(proc: Process, ruid: int, euid: int, suid: int) -> int:
    for addr, value in zip((ruid, euid, suid), os.getresuid()):
        proc.mem.write_u32(addr, value)
    return 0


@syscall("getresgid", PTR, PTR, PTR)
def getresgid(proc: Process, rgid: int, egid: int, sgid: int) -> int:
    for addr, value in zip((rgid, egid, sgid), os.getresgid()):
        proc.mem.write_u32(addr, value)
    return 0


@syscall("getgroups", INT, PTR)
def getgroups(proc: Process, size: int, groups: int) -> int:
    host = os.getgroups()
    if size == 0:
        return len(host)
    if size < len(host):
        return -errno.EINVAL
    proc.mem.write(groups, struct.pack(f"<{len(host)}I", *host))
    return len(host)


@syscall("setgroups", INT, PTR)
def setgroups(proc: Process, size: int, groups: int) -> int:
    if size < 0 or size > 65536:
        return -errno.EINVAL
    values = struct.unpack(f"<{size}I", proc.mem.read(groups, 4 * size)) if size else ()
    os.setgroups(list(values))
    return 0


def _id(value: int) -> int:
    return -1 if value in (-1, 0xFFFF_FFFF) else value


@syscall("setuid", INT)
def setuid(proc: Process, uid: int) -> int:
    os.setuid(uid)
    return 0


@syscall("setgid", INT)
def setgid(proc: Process, gid: int) -> int:
    os.setgid(gid)
    return 0


@syscall("setreuid", INT, INT)
def setreuid(proc: Process, ruid: int, euid: int) -> int:
    os.setreuid(_id(ruid), _id(euid))
    return 0


@syscall("setregid", INT, INT)
def setregid(proc: Process, rgid: int, egid: int) -> int:
    os.setregid(_id(rgid), _id(egid))
    return 0


@syscall("setresuid", INT, INT, INT)
def setresuid(proc: Process, r: int, e: int, s: int) -> int:
    os.setresuid(_id(r), _id(e), _id(s))
    return 0


@syscall("setresgid", INT, INT, INT)
def setresgid(proc: Process, r: int, e: int, s: int) -> int:
    os.setresgid(_id(r), _id(e), _id(s))
    return 0


@syscall("setfsuid", INT)
def setfsuid(proc: Process, uid: int) -> int:
    return os.geteuid()


@syscall("setfsgid", INT)
def setfsgid(proc: Process, gid: int) -> int:
    return os.getegid()


# struct new_utsname (include/uapi/linux/utsname.h): six fields of 65 bytes.
UTSNAME = Layout("new_utsname", [(f, "65s") for f in
                                 ("sysname", "nodename", "release", "version", "machine", "domainname")])


def _show_uname(proc: Process, addr: int) -> str:
    fields = UTSNAME.unpack(proc.mem.read(addr, UTSNAME.size))
    return "{sysname=%r, machine=%r, ...}" % (
        fields["sysname"].rstrip(b"\0").decode(), fields["machine"].rstrip(b"\0").decode()
    )


@syscall("uname", StructOut(_show_uname))
def uname(proc: Process, buf: int) -> int:
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
            sysname=host.sysname.encode(), nodename=host.nodename.encode(),
            release=host.release.encode(), version=host.version.encode(),
            machine=proc.linux.uname_machine.encode(), domainname=domain,
        ),
    )
    return 0


@syscall("sethostname", PTR, INT)
def sethostname(proc: Process, name: int, length: int) -> int:
    import socket

    socket.sethostname(proc.mem.read(name, length))
    return 0


# ---- limits ----------------------------------------------------------------------------------

RLIMIT_NAMES = {0: "RLIMIT_CPU", 1: "RLIMIT_FSIZE", 2: "RLIMIT_DATA", 3: "RLIMIT_STACK",
                4: "RLIMIT_CORE", 5: "RLIMIT_RSS", 6: "RLIMIT_NPROC", 7: "RLIMIT_NOFILE",
                8: "RLIMIT_MEMLOCK", 9: "RLIMIT_AS", 10: "RLIMIT_LOCKS", 11: "RLIMIT_SIGPENDING",
                12: "RLIMIT_MSGQUEUE", 13: "RLIMIT_NICE", 14: "RLIMIT_RTPRIO", 15: "RLIMIT_RTTIME"}
RLIM_INFINITY = (1 << 64) - 1
RLIMIT = Enum(RLIMIT_NAMES)


def _rlim_to_guest(value: int) -> int:
    return RLIM_INFINITY if value == resource.RLIM_INFINITY or value < 0 else value


def _rlim_to_host(value: int) -> int:
    return resource.RLIM_INFINITY if value == RLIM_INFINITY else value


def _get_limit(proc: Process, which: int) -> tuple[int, int]:
    if which == resource.RLIMIT_STACK:
        return (proc.config.stack_size, RLIM_INFINITY)
    soft, hard = resource.getrlimit(which)
    return _rlim_to_guest(soft), _rlim_to_guest(hard)


def _show_rlimit(proc: Process, addr: int) -> str:
    soft, hard = struct.unpack("<QQ", proc.mem.read(addr, 16))
    show = lambda v: "RLIM_INFINITY" if v == RLIM_INFINITY else str(v)  # noqa: E731
    return f"{{rlim_cur={show(soft)},rlim_max={show(hard)}}}"


@syscall("prlimit64", INT, RLIMIT, StructIn(_show_rlimit), StructOut(_show_rlimit))
def prlimit64(proc: Process, pid: int, which: int, new: int, old: int) -> int:
    if which not in RLIMIT_NAMES:
        return -errno.EINVAL
    if pid not in (0, os.getpid()):
        if not new and old:
            soft, hard = resource.prlimit(pid, which)
            proc.mem.write(old, struct.pack("<QQ", _rlim_to_guest(soft), _rlim_to_guest(hard)))
            return 0
        return -errno.EPERM
    current = _get_limit(proc, which)
    if new:
        soft, hard = struct.unpack("<QQ", proc.mem.read(new, 16))
        if soft > hard:
            return -errno.EINVAL
        if which != resource.RLIMIT_STACK:
            resource.setrlimit(which, (_rlim_to_host(soft), _rlim_to_host(hard)))
    if old:
        proc.mem.write(old, struct.pack("<QQ", *current))
    return 0


@syscall("getrlimit", RLIMIT, StructOut(_show_rlimit))
def getrlimit(proc: Process, which: int, old: int) -> int:
    return prlimit64(proc, 0, which, 0, old)


@syscall("setrlimit", RLIMIT, StructIn(_show_rlimit))
def setrlimit(proc: Process, which: int, new: int) -> int:
    return prlimit64(proc, 0, which, new, 0)


# struct rusage (include/uapi/linux/resource.h): two timevals then 14 longs = 144 bytes.
def _pack_rusage(ru: resource.struct_rusage) -> bytes:
    def tv(seconds: float) -> tuple[int, int]:
        whole = int(seconds)
        return whole, int(round((seconds - whole) * 1_000_000))

    return struct.pack(
        "<qqqq14q", *tv(ru.ru_utime), *tv(ru.ru_stime), ru.ru_maxrss, ru.ru_ixrss, ru.ru_idrss,
        ru.ru_isrss, ru.ru_minflt, ru.ru_majflt, ru.ru_nswap, ru.ru_inblock, ru.ru_oublock,
        ru.ru_msgsnd, ru.ru_msgrcv, ru.ru_nsignals, ru.ru_nvcsw, ru.ru_nivcsw,
    )


@syscall("getrusage", Enum({0: "RUSAGE_SELF", -1: "RUSAGE_CHILDREN", 1: "RUSAGE_THREAD"}), PTR)
def getrusage(proc: Process, who: int, usage: int) -> int:
    host_who = {0: resource.RUSAGE_SELF, -1: resource.RUSAGE_CHILDREN, 1: resource.RUSAGE_THREAD}
    if who not in host_who:
        return -errno.EINVAL
    proc.mem.write(usage, _pack_rusage(resource.getrusage(host_who[who])))
    return 0


# struct sysinfo (include/uapi/linux/sysinfo.h), 64-bit: 112 bytes; x86_64's is identical.
@syscall("sysinfo", PTR)
def sysinfo(proc: Process, info: int) -> int:
    import ctypes

    buf = ctypes.create_string_buffer(112)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.sysinfo(buf) < 0:
        return -ctypes.get_errno()
    proc.mem.write(info, buf.raw)
    return 0


@syscall("getrandom", PTR, ULONG, Flags({1: "GRND_NONBLOCK", 2: "GRND_RANDOM", 4: "GRND_INSECURE"}))
def getrandom(proc: Process, buf: int, length: int, flags: int) -> int:
    if flags & ~7:
        return -errno.EINVAL
    length = min(length, 1 << 25)
    proc.mem.write(buf, os.getrandom(length, flags & 3))
    return length


# ---- scheduling ------------------------------------------------------------------------------


@syscall("sched_getaffinity", INT, ULONG, PTR)
def sched_getaffinity(proc: Process, pid: int, size: int, mask: int) -> int:
    cpus = os.sched_getaffinity(pid)
    nbytes = max((max(cpus) // 64 + 1) * 8, 8)
    if size < nbytes or size % 8:
        return -errno.EINVAL
    value = sum(1 << c for c in cpus)
    proc.mem.write(mask, value.to_bytes(nbytes, "little"))
    return nbytes


@syscall("sched_setaffinity", INT, ULONG, PTR)
def sched_setaffinity(proc: Process, pid: int, size: int, mask: int) -> int:
    value = int.from_bytes(proc.mem.read(mask, size), "little")
    cpus = {i for i in range(size * 8) if value >> i & 1}
    os.sched_setaffinity(pid, cpus)
    return 0


@syscall("sched_yield")
def sched_yield(proc: Process) -> int:
    os.sched_yield()
    return 0


@syscall("getcpu", PTR, PTR, PTR)
def getcpu(proc: Process, cpu: int, node: int, cache: int) -> int:
    if cpu:
        proc.mem.write_u32(cpu, 0)
    if node:
        proc.mem.write_u32(node, 0)
    return 0


@syscall("sched_getscheduler", INT)
def sched_getscheduler(proc: Process, pid: int) -> int:
    return os.sched_getscheduler(pid)


@syscall("sched_getparam", INT, PTR)
def sched_getparam(proc: Process, pid: int, param: int) -> int:
    proc.mem.write_u32(param, os.sched_getparam(pid).sched_priority)
    return 0


@syscall("getpriority", INT, INT)
def getpriority(proc: Process, which: int, who: int) -> int:
    # The kernel returns 20 - nice so that the result is never negative.
    return 20 - os.getpriority(which, who)


@syscall("setpriority", INT, INT, INT)
def setpriority(proc: Process, which: int, who: int, prio: int) -> int:
    os.setpriority(which, who, prio)
    return 0


# ---- prctl -----------------------------------------------------------------------------------

PR_NAMES = {1: "PR_SET_PDEATHSIG", 2: "PR_GET_PDEATHSIG", 3: "PR_GET_DUMPABLE",
            4: "PR_SET_DUMPABLE", 15: "PR_SET_NAME", 16: "PR_GET_NAME", 22: "PR_GET_SECCOMP",
            36: "PR_SET_CHILD_SUBREAPER", 37: "PR_GET_CHILD_SUBREAPER", 38: "PR_SET_NO_NEW_PRIVS",
            39: "PR_GET_NO_NEW_PRIVS", 23: "PR_CAPBSET_READ", 47: "PR_CAP_AMBIENT",
            50: "PR_SVE_SET_VL", 51: "PR_SVE_GET_VL", 0x59616d61: "PR_SET_PTRACER",
            1398164801: "PR_SET_VMA"}


@syscall("prctl", Enum(PR_NAMES), ULONG, ULONG, ULONG, ULONG)
def prctl(proc: Process, option: int, a2: int, a3: int, a4: int, a5: int) -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if option == 15:  # PR_SET_NAME
        proc.thread_name = proc.mem.read_cstr(a2, 16)[:15]
        return 0
    if option == 16:  # PR_GET_NAME
        proc.mem.write(a2, proc.thread_name.ljust(16, b"\0")[:16])
        return 0
    if option in (1, 3, 4, 36, 37, 38, 39, 23, 0x59616D61):
        if option in (2, 37, 39):
            pass
        out = ctypes.c_int(0)
        if option in (37,):
            result = libc.prctl(option, ctypes.byref(out), 0, 0, 0)
            if result == 0:
                proc.mem.write_u32(a2, out.value)
            return result if result >= 0 else -ctypes.get_errno()
        result = libc.prctl(option, ctypes.c_ulong(a2), ctypes.c_ulong(a3),
                            ctypes.c_ulong(a4), ctypes.c_ulong(a5))
        return result if result >= 0 else -ctypes.get_errno()
    if option == 2:  # PR_GET_PDEATHSIG
        out = ctypes.c_int(0)
        libc.prctl(2, ctypes.byref(out), 0, 0, 0)
        proc.mem.write_u32(a2, out.value)
        return 0
    if option == 22:  # PR_GET_SECCOMP
        return 0
    if option == 1398164801:  # PR_SET_VMA (naming anonymous memory): accepted, not shown
        return 0
    return -errno.EINVAL


@syscall("personality", ULONG)
def personality(proc: Process, persona: int) -> int:
    return 0  # PER_LINUX


@syscall("getpgid", INT)
def getpgid(proc: Process, pid: int) -> int:
    return os.getpgid(pid)


@syscall("getsid", INT)
def getsid(proc: Process, pid: int) -> int:
    return os.getsid(pid)


@syscall("setpgid", INT, INT)
def setpgid(proc: Process, pid: int, pgid: int) -> int:
    os.setpgid(pid, pgid)
    return 0


@syscall("setsid")
def setsid(proc: Process) -> int:
    return os.setsid()
