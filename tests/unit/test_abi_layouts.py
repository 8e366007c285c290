"""Every guest layout of qemuser/syscalls/abi/: its size and field offsets, per architecture.

The numbers below are sizeof() and offsetof() of the C struct each layout cites, as the cross
compilers give them with the kernel headers Debian ships for the target (linux-libc-dev 6.1,
/usr/<triple>/include; the userspace socket structs from glibc's headers, which copy the
kernel's). test_layout_numbers holds each layout to its numbers; test_numbers_are_the_headers
recompiles the whole table as C static assertions with each cross compiler, so a wrong number
here cannot pass either.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qemuser.syscalls import abi
from qemuser.syscalls.abi import (
    dirent,
    filecontrol,
    filestat,
    futex,
    poll,
    resources,
    scalars,
    sigaction,
    siginfo,
    sockets,
    sysinfo,
    termbits,
    timespec,
    ucontext,
)
from qemuser.syscalls.abi.layout import Layout

BOTH = ("aarch64", "riscv64")

# Translation units: the kernel's uapi headers alone (no libc: they define siginfo_t, sigaction,
# stat... as the kernel has them), and glibc's for what only it declares to userspace.
KERNEL_HEADERS = (
    "linux/types.h",
    "asm/siginfo.h",
    "asm/signal.h",
    "asm/sigcontext.h",
    "asm/ucontext.h",
    "linux/signalfd.h",
    "linux/time_types.h",
    "linux/time.h",
    "linux/times.h",
    "linux/resource.h",
    "linux/sysinfo.h",
    "linux/utsname.h",
    "asm/poll.h",
    "linux/eventpoll.h",
    "linux/uio.h",
    "linux/filter.h",
    "linux/in.h",
    "linux/in6.h",
    "linux/un.h",
    "linux/socket.h",
    "asm/stat.h",
    "asm/statfs.h",
    "linux/stat.h",
    "asm/termbits.h",
    "asm/termios.h",
    "linux/fcntl.h",
    "linux/futex.h",
)
LIBC_HEADERS = ("sys/socket.h", "dirent.h")


@dataclass(frozen=True)
class CStruct:
    """A layout, the C type it mirrors and the numbers the compilers give for it."""

    layout: Layout  # type: ignore[type-arg]
    c_type: str  # "" for the kernel's internal structs, which no header declares
    size: int
    offsets: dict[str, int]
    # layout field -> C designator, or None for padding that C leaves unnamed
    members: dict[str, str | None] = field(default_factory=dict)
    arches: tuple[str, ...] = BOTH
    libc: bool = False  # from glibc's headers rather than the kernel's
    size_expr: str = ""  # when the layout is a prefix: the C expression of its size

    @property
    def id(self) -> str:
        return f"{self.layout.name}-{'-'.join(self.arches)}"


def _si(view: str, **names: str) -> dict[str, str | None]:
    """siginfo_t members: the head, and the union member `view`'s fields."""
    members: dict[str, str | None] = {"si_signo": "si_signo", "si_errno": "si_errno"}
    members |= {"si_code": "si_code", "__pad": None}
    members.update({k: f"_sifields.{view}.{v}" for k, v in names.items()})
    return members


SI_HEAD = {"si_signo": 0, "si_errno": 4, "si_code": 8, "__pad": 12}

TABLE: list[CStruct] = [
    # ---- time --------------------------------------------------------------------------------
    CStruct(timespec.TIMESPEC, "struct __kernel_timespec", 16, {"tv_sec": 0, "tv_nsec": 8}),
    CStruct(timespec.TIMEVAL, "struct __kernel_old_timeval", 16, {"tv_sec": 0, "tv_usec": 8}),
    CStruct(timespec.SOCK_TIMEVAL, "struct __kernel_sock_timeval", 16, {"tv_sec": 0, "tv_usec": 8}),
    CStruct(
        timespec.ITIMERSPEC,
        "struct __kernel_itimerspec",
        32,
        {"it_interval_sec": 0, "it_interval_nsec": 8, "it_value_sec": 16, "it_value_nsec": 24},
        {
            "it_interval_sec": "it_interval.tv_sec",
            "it_interval_nsec": "it_interval.tv_nsec",
            "it_value_sec": "it_value.tv_sec",
            "it_value_nsec": "it_value.tv_nsec",
        },
    ),
    CStruct(
        timespec.ITIMERVAL,
        "struct __kernel_old_itimerval",
        32,
        {"it_interval_sec": 0, "it_interval_usec": 8, "it_value_sec": 16, "it_value_usec": 24},
        {
            "it_interval_sec": "it_interval.tv_sec",
            "it_interval_usec": "it_interval.tv_usec",
            "it_value_sec": "it_value.tv_sec",
            "it_value_usec": "it_value.tv_usec",
        },
    ),
    CStruct(timespec.TIMEZONE, "struct timezone", 8, {"tz_minuteswest": 0, "tz_dsttime": 4}),
    CStruct(
        timespec.TMS,
        "struct tms",
        32,
        {"tms_utime": 0, "tms_stime": 8, "tms_cutime": 16, "tms_cstime": 24},
    ),
    # ---- resources and system information -----------------------------------------------------
    CStruct(
        resources.RUSAGE,
        "struct rusage",
        144,
        {"ru_utime_sec": 0, "ru_utime_usec": 8, "ru_stime_sec": 16, "ru_stime_usec": 24}
        | {f"ru_{name}": 32 + 8 * i for i, name in enumerate(resources.RUSAGE_COUNTERS)},
        {
            "ru_utime_sec": "ru_utime.tv_sec",
            "ru_utime_usec": "ru_utime.tv_usec",
            "ru_stime_sec": "ru_stime.tv_sec",
            "ru_stime_usec": "ru_stime.tv_usec",
        },
    ),
    CStruct(resources.RLIMIT64, "struct rlimit64", 16, {"rlim_cur": 0, "rlim_max": 8}),
    CStruct(
        sysinfo.UTSNAME,
        "struct new_utsname",
        390,
        {name: 65 * i for i, name in enumerate(sysinfo.UTSNAME_FIELDS)},
    ),
    CStruct(
        sysinfo.SYSINFO,
        "struct sysinfo",
        112,
        {
            "uptime": 0,
            "loads": 8,
            "totalram": 32,
            "freeram": 40,
            "sharedram": 48,
            "bufferram": 56,
            "totalswap": 64,
            "freeswap": 72,
            "procs": 80,
            "pad": 82,
            "totalhigh": 88,
            "freehigh": 96,
            "mem_unit": 104,
        },
    ),
    # ---- sockets -----------------------------------------------------------------------------
    CStruct(sockets.SA_FAMILY, "struct sockaddr", 2, {"sa_family": 0}, libc=True, size_expr="2"),
    CStruct(
        sockets.SOCKADDR_IN,
        "struct sockaddr_in",
        16,
        {"sin_family": 0, "sin_port": 2, "sin_addr": 4, "__pad": 8},
    ),
    CStruct(
        sockets.SOCKADDR_IN6,
        "struct sockaddr_in6",
        28,
        {"sin6_family": 0, "sin6_port": 2, "sin6_flowinfo": 4, "sin6_addr": 8, "sin6_scope_id": 24},
    ),
    CStruct(sockets.SOCKADDR_UN, "struct sockaddr_un", 110, {"sun_family": 0, "sun_path": 2}),
    CStruct(sockets.IOVEC, "struct iovec", 16, {"iov_base": 0, "iov_len": 8}),
    CStruct(
        sockets.MSGHDR,
        "struct msghdr",
        56,
        {
            "msg_name": 0,
            "msg_namelen": 8,
            "msg_iov": 16,
            "msg_iovlen": 24,
            "msg_control": 32,
            "msg_controllen": 40,
            "msg_flags": 48,
        },
        libc=True,
    ),
    CStruct(sockets.MMSGHDR, "struct mmsghdr", 64, {"msg_hdr": 0, "msg_len": 56}, libc=True),
    CStruct(
        sockets.CMSGHDR,
        "struct cmsghdr",
        16,
        {"cmsg_len": 0, "cmsg_level": 8, "cmsg_type": 12},
        libc=True,
    ),
    CStruct(sockets.UCRED, "struct ucred", 12, {"pid": 0, "uid": 4, "gid": 8}, libc=True),
    CStruct(sockets.LINGER, "struct linger", 8, {"l_onoff": 0, "l_linger": 4}, libc=True),
    CStruct(sockets.SOCK_FPROG, "struct sock_fprog", 16, {"len": 0, "filter": 8}),
    CStruct(sockets.SOCK_FILTER, "struct sock_filter", 8, {"code": 0, "jt": 2, "jf": 3, "k": 4}),
    # ---- polling -----------------------------------------------------------------------------
    CStruct(poll.SIGSET_ARGPACK, "", 16, {"p": 0, "size": 8}),  # fs/select.c
    CStruct(poll.POLLFD, "struct pollfd", 8, {"fd": 0, "events": 4, "revents": 6}),
    CStruct(poll.EPOLL_EVENT["aarch64"], "struct epoll_event", 16, {"events": 0, "data": 8}),
    CStruct(
        poll.EPOLL_EVENT["riscv64"],
        "struct epoll_event",
        16,
        {"events": 0, "data": 8},
        arches=("riscv64",),
    ),
    CStruct(
        poll.EPOLL_EVENT["x86_64"],
        "struct epoll_event",
        12,
        {"events": 0, "data": 4},
        arches=("x86_64",),
    ),
    # ---- signals -----------------------------------------------------------------------------
    CStruct(sigaction.SIGSET, "sigset_t", 8, {"sig": 0}, {"sig": None}),  # a scalar
    CStruct(
        sigaction.SIGACTION["aarch64"],
        "struct sigaction",
        32,
        {"sa_handler": 0, "sa_flags": 8, "sa_restorer": 16, "sa_mask": 24},
        arches=("aarch64",),
    ),
    CStruct(
        sigaction.SIGACTION["riscv64"],
        "struct sigaction",
        24,
        {"sa_handler": 0, "sa_flags": 8, "sa_mask": 16},
        arches=("riscv64",),
    ),
    CStruct(
        sigaction.STACK_T,
        "stack_t",
        24,
        {"ss_sp": 0, "ss_flags": 8, "__pad": 12, "ss_size": 16},
        {"__pad": None},
    ),
    CStruct(siginfo.SIGINFO_HEAD, "siginfo_t", 128, SI_HEAD, _si("")),
    CStruct(
        siginfo.SIGINFO_KILL,
        "siginfo_t",
        128,
        SI_HEAD | {"si_pid": 16, "si_uid": 20},
        _si("_kill", si_pid="_pid", si_uid="_uid"),
    ),
    CStruct(
        siginfo.SIGINFO_TIMER,
        "siginfo_t",
        128,
        SI_HEAD | {"si_timerid": 16, "si_overrun": 20, "si_value": 24},
        _si("_timer", si_timerid="_tid", si_overrun="_overrun", si_value="_sigval"),
    ),
    CStruct(
        siginfo.SIGINFO_RT,
        "siginfo_t",
        128,
        SI_HEAD | {"si_pid": 16, "si_uid": 20, "si_value": 24},
        _si("_rt", si_pid="_pid", si_uid="_uid", si_value="_sigval"),
    ),
    CStruct(
        siginfo.SIGINFO_CHLD,
        "siginfo_t",
        128,
        SI_HEAD | {"si_pid": 16, "si_uid": 20, "si_status": 24, "si_utime": 32, "si_stime": 40},
        _si(
            "_sigchld",
            si_pid="_pid",
            si_uid="_uid",
            si_status="_status",
            si_utime="_utime",
            si_stime="_stime",
        ),
    ),
    CStruct(
        siginfo.SIGINFO_FAULT,
        "siginfo_t",
        128,
        SI_HEAD | {"si_addr": 16},
        _si("_sigfault", si_addr="_addr"),
    ),
    CStruct(
        siginfo.SIGINFO_POLL,
        "siginfo_t",
        128,
        SI_HEAD | {"si_band": 16, "si_fd": 24},
        _si("_sigpoll", si_band="_band", si_fd="_fd"),
    ),
    CStruct(
        siginfo.SIGINFO_SYS,
        "siginfo_t",
        128,
        SI_HEAD | {"si_call_addr": 16, "si_syscall": 24, "si_arch": 28},
        _si("_sigsys", si_call_addr="_call_addr", si_syscall="_syscall", si_arch="_arch"),
    ),
    CStruct(
        siginfo.SIGEVENT,
        "struct sigevent",
        64,
        {"sigev_value": 0, "sigev_signo": 8, "sigev_notify": 12, "sigev_tid": 16},
        {"sigev_tid": "_sigev_un._tid"},
    ),
    CStruct(
        siginfo.SIGNALFD_SIGINFO,
        "struct signalfd_siginfo",
        128,
        {
            "ssi_signo": 0,
            "ssi_errno": 4,
            "ssi_code": 8,
            "ssi_pid": 12,
            "ssi_uid": 16,
            "ssi_fd": 20,
            "ssi_tid": 24,
            "ssi_band": 28,
            "ssi_overrun": 32,
            "ssi_trapno": 36,
            "ssi_status": 40,
            "ssi_int": 44,
            "ssi_ptr": 48,
            "ssi_utime": 56,
            "ssi_stime": 64,
            "ssi_addr": 72,
            "ssi_addr_lsb": 80,
            "__pad2": 82,
            "ssi_syscall": 84,
            "ssi_call_addr": 88,
            "ssi_arch": 96,
            "__pad": 100,
        },
    ),
    # ---- ucontext and sigcontext, per architecture --------------------------------------------
    CStruct(
        ucontext.A64_UCONTEXT,
        "struct ucontext",
        4560,
        {
            "uc_flags": 0,
            "uc_link": 8,
            "uc_stack": 16,
            "uc_sigmask": 40,
            "__unused": 48,
            "__align": 168,
            "uc_mcontext": 176,
        },
        {"__align": None},
        arches=("aarch64",),
    ),
    CStruct(
        ucontext.RV_UCONTEXT,
        "struct ucontext",
        960,
        {
            "uc_flags": 0,
            "uc_link": 8,
            "uc_stack": 16,
            "uc_sigmask": 40,
            "__unused": 48,
            "__align": 168,
            "uc_mcontext": 176,
        },
        {"__align": None},
        arches=("riscv64",),
    ),
    # the kernel's own (arch/*/kernel/signal.c): no header to compile against
    CStruct(ucontext.A64_FRAME_RECORD, "", 16, {"fp": 0, "lr": 8}, arches=("aarch64",)),
    CStruct(ucontext.A64_RT_SIGFRAME, "", 4688, {"info": 0, "uc": 128}, arches=("aarch64",)),
    CStruct(ucontext.RV_RT_SIGFRAME, "", 1088, {"info": 0, "uc": 128}, arches=("riscv64",)),
    CStruct(
        ucontext.A64_SIGCONTEXT,
        "struct sigcontext",
        4384,
        {
            "fault_address": 0,
            "regs": 8,
            "sp": 256,
            "pc": 264,
            "pstate": 272,
            "__align": 280,
            "reserved": 288,
        },
        {"__align": None, "reserved": "__reserved"},
        arches=("aarch64",),
    ),
    CStruct(
        ucontext.A64_CTX, "struct _aarch64_ctx", 8, {"magic": 0, "size": 4}, arches=("aarch64",)
    ),
    CStruct(
        ucontext.FPSIMD_CONTEXT,
        "struct fpsimd_context",
        528,
        {"magic": 0, "size": 4, "fpsr": 8, "fpcr": 12, "vregs": 16},
        {"magic": "head.magic", "size": "head.size"},
        arches=("aarch64",),
    ),
    CStruct(
        ucontext.ESR_CONTEXT,
        "struct esr_context",
        16,
        {"magic": 0, "size": 4, "esr": 8},
        {"magic": "head.magic", "size": "head.size"},
        arches=("aarch64",),
    ),
    CStruct(
        ucontext.SVE_CONTEXT,
        "struct sve_context",
        16,
        {"magic": 0, "size": 4, "vl": 8, "flags": 10, "__reserved": 12},
        {"magic": "head.magic", "size": "head.size"},
        arches=("aarch64",),
    ),
    CStruct(
        ucontext.EXTRA_CONTEXT,
        "struct extra_context",
        32,
        {"magic": 0, "size": 4, "datap": 8, "data_size": 16, "__reserved": 20},
        {"magic": "head.magic", "size": "head.size", "data_size": "size"},
        arches=("aarch64",),
    ),
    CStruct(
        ucontext.RV_SIGCONTEXT,
        "struct sigcontext",
        784,
        {"sc_regs": 0, "sc_fpregs": 256},
        arches=("riscv64",),
    ),
    CStruct(
        ucontext.RV_D_EXT_STATE,
        "struct __riscv_d_ext_state",
        264,
        {"f": 0, "fcsr": 256},
        arches=("riscv64",),
    ),
    # ---- files -------------------------------------------------------------------------------
    CStruct(
        filestat.STAT,
        "struct stat",
        128,
        {
            "st_dev": 0,
            "st_ino": 8,
            "st_mode": 16,
            "st_nlink": 20,
            "st_uid": 24,
            "st_gid": 28,
            "st_rdev": 32,
            "__pad1": 40,
            "st_size": 48,
            "st_blksize": 56,
            "__pad2": 60,
            "st_blocks": 64,
            "st_atime": 72,
            "st_atime_nsec": 80,
            "st_mtime": 88,
            "st_mtime_nsec": 96,
            "st_ctime": 104,
            "st_ctime_nsec": 112,
            "__unused4": 120,
            "__unused5": 124,
        },
    ),
    CStruct(
        filestat.STATX,
        "struct statx",
        256,
        {
            "stx_mask": 0,
            "stx_blksize": 4,
            "stx_attributes": 8,
            "stx_nlink": 16,
            "stx_uid": 20,
            "stx_gid": 24,
            "stx_mode": 28,
            "__spare0": 30,
            "stx_ino": 32,
            "stx_size": 40,
            "stx_blocks": 48,
            "stx_attributes_mask": 56,
            "stx_atime_sec": 64,
            "stx_atime_nsec": 72,
            "__stx_atime_reserved": 76,
            "stx_btime_sec": 80,
            "stx_btime_nsec": 88,
            "__stx_btime_reserved": 92,
            "stx_ctime_sec": 96,
            "stx_ctime_nsec": 104,
            "__stx_ctime_reserved": 108,
            "stx_mtime_sec": 112,
            "stx_mtime_nsec": 120,
            "__stx_mtime_reserved": 124,
            "stx_rdev_major": 128,
            "stx_rdev_minor": 132,
            "stx_dev_major": 136,
            "stx_dev_minor": 140,
            "stx_mnt_id": 144,
            "stx_dio_mem_align": 152,
            "stx_dio_offset_align": 156,
        },
        {
            f"{prefix}stx_{t}time{part}": f"stx_{t}time.{member}"
            for t in "abcm"
            for prefix, part, member in (
                ("", "_sec", "tv_sec"),
                ("", "_nsec", "tv_nsec"),
                ("__", "_reserved", "__reserved"),
            )
        },
    ),
    CStruct(
        filestat.STATFS,
        "struct statfs",
        120,
        {
            "f_type": 0,
            "f_bsize": 8,
            "f_blocks": 16,
            "f_bfree": 24,
            "f_bavail": 32,
            "f_files": 40,
            "f_ffree": 48,
            "f_fsid0": 56,
            "f_fsid1": 60,
            "f_namelen": 64,
            "f_frsize": 72,
            "f_flags": 80,
            "f_spare": 88,
        },
        {"f_fsid0": "f_fsid.val[0]", "f_fsid1": "f_fsid.val[1]"},
    ),
    CStruct(
        dirent.DIRENT64,
        "struct dirent64",
        19,
        {"d_ino": 0, "d_off": 8, "d_reclen": 16, "d_type": 18},
        libc=True,
        size_expr="offsetof(struct dirent64, d_name)",
    ),
    CStruct(
        filecontrol.FLOCK,
        "struct flock",
        32,
        {"l_type": 0, "l_whence": 2, "l_start": 8, "l_len": 16, "l_pid": 24},
    ),
    CStruct(filecontrol.F_OWNER_EX, "struct f_owner_ex", 8, {"type": 0, "pid": 4}),
    CStruct(
        termbits.TERMIOS,
        "struct termios",
        36,
        {"c_iflag": 0, "c_oflag": 4, "c_cflag": 8, "c_lflag": 12, "c_line": 16, "c_cc": 17},
    ),
    CStruct(
        termbits.TERMIOS2,
        "struct termios2",
        44,
        {
            "c_iflag": 0,
            "c_oflag": 4,
            "c_cflag": 8,
            "c_lflag": 12,
            "c_line": 16,
            "c_cc": 17,
            "c_ispeed": 36,
            "c_ospeed": 40,
        },
    ),
    CStruct(
        futex.ROBUST_LIST_HEAD,
        "struct robust_list_head",
        24,
        {"list_next": 0, "futex_offset": 8, "list_op_pending": 16},
        {"list_next": "list.next"},
    ),
    # ---- scalars -----------------------------------------------------------------------------
    CStruct(scalars.INT, "int", 4, {"value": 0}, {"value": None}),
    CStruct(scalars.CHAR, "unsigned char", 1, {"value": 0}, {"value": None}),
    CStruct(scalars.LOFF_T, "__kernel_loff_t", 8, {"value": 0}, {"value": None}),
    CStruct(scalars.FD_PAIR, "int[2]", 8, {"fd0": 0, "fd1": 4}, {"fd0": None, "fd1": None}),
    CStruct(
        termbits.WINSIZE,
        "struct winsize",
        8,
        {"ws_row": 0, "ws_col": 2, "ws_xpixel": 4, "ws_ypixel": 6},
    ),
]


@pytest.mark.parametrize("spec", TABLE, ids=lambda spec: spec.id)
def test_layout_numbers(spec: CStruct) -> None:
    layout = spec.layout
    assert layout.size == spec.size
    assert layout.offsets == spec.offsets  # every field, padding included, is checked


def _c_source(arch: str) -> list[str]:
    """The kernel unit and the libc unit: static assertions of the table's numbers for `arch`."""
    units = []
    for libc, headers in ((False, KERNEL_HEADERS), (True, LIBC_HEADERS)):
        lines = ["#define _GNU_SOURCE"] if libc else []
        lines += ["#include <stddef.h>"] + [f"#include <{header}>" for header in headers]
        for spec in TABLE:
            if arch not in spec.arches or spec.libc != libc or not spec.c_type:
                continue
            name = spec.layout.name
            size = spec.size_expr or f"sizeof({spec.c_type})"
            lines.append(f'_Static_assert({size} == {spec.size}, "{name} size");')
            for field_name, offset in spec.offsets.items():
                member = spec.members.get(field_name, field_name)
                if member is not None:
                    lines.append(
                        f"_Static_assert(offsetof({spec.c_type}, {member}) == {offset}, "
                        f'"{name}.{field_name}");'
                    )
        units.append("\n".join(lines) + "\n")
    return units


@pytest.mark.parametrize("arch", ["aarch64", "riscv64", "x86_64"])
def test_numbers_are_the_headers(arch: str, tmp_path) -> None:
    compiler = f"{arch}-linux-gnu-gcc"
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler}")
    for index, source in enumerate(_c_source(arch)):
        path = tmp_path / f"unit{index}.c"
        path.write_text(source)
        result = subprocess.run(
            [compiler, "-fsyntax-only", "-Werror", str(path)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


def test_every_abi_layout_is_in_the_table() -> None:
    """A layout added to abi/ without its numbers fails here (a module that another
    test_abi_*.py file imports holds its numbers there)."""
    here = Path(__file__)
    others = [p.read_text() for p in here.parent.glob("test_abi_*.py") if p != here]
    tabled = {id(spec.layout) for spec in TABLE}
    untested = set()
    for info in pkgutil.iter_modules(abi.__path__):
        if info.name == "sigframe":
            continue  # builds frames from the CPU (unicorn); its layouts are ucontext.py's
        if any(f"abi.{info.name} " in t or f"abi import {info.name}\n" in t for t in others):
            continue
        module = importlib.import_module(f"{abi.__name__}.{info.name}")
        for value in vars(module).values():
            for layout in value.values() if isinstance(value, dict) else [value]:
                if isinstance(layout, Layout) and id(layout) not in tabled:
                    untested.add(f"{info.name}.{layout.name}")
    assert untested == set()
