"""System V IPC: shared memory, semaphores and message queues, as the host kernel's own objects.

Every id and key is the host's, so a guest's segments, semaphore sets and queues are shared with
its forked children (host processes too) and with any host process, and `ipcs` lists them. The
records the guest passes are translated through their layouts (abi/ipc.py). A guest pointer the
guest may not access is handed to the host as an address no host mapping has, so that the host
kernel reports EFAULT at the point of the call where Linux does (after the size and id checks).

A shm segment is attached twice: the host attaches it where the host likes, and those host
pages are lent to unicorn at the guest address (as a MAP_SHARED mapping is: loader/memory.py),
with the protections shmat asked for and the name, device and inode the host kernel shows for
it in /proc/self/maps (`/SYSV%08x (deleted)`). Unmapping the guest range unmaps the host pages,
which detaches the host's attachment: shmdt, munmap, and a mapping laid over it all detach.

semop, semtimedop, msgsnd and msgrcv may sleep: they are declared `blocks` (other guest threads
go on), and never restarted after a signal handler, as man 7 signal lists them.
"""

from __future__ import annotations

import ctypes
import errno
from typing import TYPE_CHECKING

from qemuser.host.libc import UNMAPPED_HOST_ADDRESS, host_syscall
from qemuser.host.sysnums import (
    HOST_SYS_MSGCTL,
    HOST_SYS_MSGGET,
    HOST_SYS_MSGRCV,
    HOST_SYS_MSGSND,
    HOST_SYS_SEMCTL,
    HOST_SYS_SEMGET,
    HOST_SYS_SEMTIMEDOP,
    HOST_SYS_SHMAT,
    HOST_SYS_SHMCTL,
    HOST_SYS_SHMDT,
    HOST_SYS_SHMGET,
)
from qemuser.loader.fault import GuestFault
from qemuser.loader.memory import MIN_MAP_ADDRESS, PROT_EXEC, PROT_READ, PROT_WRITE
from qemuser.syscalls.abi import ipc as abi
from qemuser.syscalls.abi.layout import Layout
from qemuser.syscalls.argkinds import (
    INT,
    PTR,
    ULONG,
    ArgKind,
    Enum,
    Flags,
    Long,
    Ret,
    c_string_literal,
    s32,
)
from qemuser.syscalls.registry import syscall

if TYPE_CHECKING:
    from qemuser.syscalls.context import GuestProcess

# The largest message text we give the host room for (the default msgmax is 8 KiB; a queue's
# limit may be raised, never past what the host itself would allocate for one message).
_MESSAGE_LIMIT = 1 << 24
_TIMESPEC_SIZE = 16  # struct __kernel_timespec: two 64-bit words, guest and host alike

LONG = Long()


# ---- how -strace shows them ----------------------------------------------------------------


class IpcKey(ArgKind):
    """A key_t: IPC_PRIVATE, or the key in hex as strace shows it."""

    def decode(self, proc: GuestProcess, raw: int) -> int:
        return s32(raw)

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        key = raw & 0xFFFF_FFFF
        return "IPC_PRIVATE" if key == abi.IPC_PRIVATE else f"{key:#x}"


def _get_flags(extra: dict[int, str]) -> Flags:
    return Flags({abi.IPC_CREAT: "IPC_CREAT", abi.IPC_EXCL: "IPC_EXCL", **extra}, octal=True)


SHMGET_FLAGS = _get_flags({abi.SHM_HUGETLB: "SHM_HUGETLB", abi.SHM_NORESERVE: "SHM_NORESERVE"})
GET_FLAGS = _get_flags({})
SHMAT_FLAGS = Flags(
    {
        abi.SHM_RDONLY: "SHM_RDONLY",
        abi.SHM_RND: "SHM_RND",
        abi.SHM_REMAP: "SHM_REMAP",
        abi.SHM_EXEC: "SHM_EXEC",
    }
)
MSG_FLAGS = Flags(
    {
        abi.IPC_NOWAIT: "IPC_NOWAIT",
        abi.MSG_NOERROR: "MSG_NOERROR",
        abi.MSG_EXCEPT: "MSG_EXCEPT",
        abi.MSG_COPY: "MSG_COPY",
    }
)
_COMMON_CMDS = {abi.IPC_RMID: "IPC_RMID", abi.IPC_SET: "IPC_SET", abi.IPC_STAT: "IPC_STAT"}
SHMCTL_CMD = Enum(
    {
        **_COMMON_CMDS,
        abi.IPC_INFO: "IPC_INFO",
        abi.SHM_LOCK: "SHM_LOCK",
        abi.SHM_UNLOCK: "SHM_UNLOCK",
        abi.SHM_STAT: "SHM_STAT",
        abi.SHM_INFO: "SHM_INFO",
        abi.SHM_STAT_ANY: "SHM_STAT_ANY",
    }
)
SEMCTL_CMD = Enum(
    {
        **_COMMON_CMDS,
        abi.IPC_INFO: "IPC_INFO",
        abi.GETPID: "GETPID",
        abi.GETVAL: "GETVAL",
        abi.GETALL: "GETALL",
        abi.GETNCNT: "GETNCNT",
        abi.GETZCNT: "GETZCNT",
        abi.SETVAL: "SETVAL",
        abi.SETALL: "SETALL",
        abi.SEM_STAT: "SEM_STAT",
        abi.SEM_INFO: "SEM_INFO",
        abi.SEM_STAT_ANY: "SEM_STAT_ANY",
    }
)
MSGCTL_CMD = Enum(
    {
        **_COMMON_CMDS,
        abi.IPC_INFO: "IPC_INFO",
        abi.MSG_STAT: "MSG_STAT",
        abi.MSG_INFO: "MSG_INFO",
        abi.MSG_STAT_ANY: "MSG_STAT_ANY",
    }
)
_SEM_FLAG_NAMES = Flags({abi.IPC_NOWAIT: "IPC_NOWAIT", abi.SEM_UNDO: "SEM_UNDO"})


class SembufArray(ArgKind):
    """semop's struct sembuf[nsops] (nsops in argument `count_arg`), as strace shows it."""

    def __init__(self, count_arg: int) -> None:
        self.count_arg = count_arg

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        count = s32(args[self.count_arg])
        if not 0 < count <= 64:
            return f"{raw:#x}"
        try:
            data = proc.mem.read(raw, count * abi.SEMBUF.size)
        except GuestFault:
            return f"{raw:#x}"
        shown = []
        for i in range(count):
            op = abi.SEMBUF.unpack(data, i * abi.SEMBUF.size)
            flags = _SEM_FLAG_NAMES.format(proc, op.sem_flg & 0xFFFF, args, result)
            shown.append(f"{{sem_num={op.sem_num}, sem_op={op.sem_op}, sem_flg={flags}}}")
        return "[" + ", ".join(shown) + "]"


class Msgbuf(ArgKind):
    """A struct msgbuf: its type and text (msgsnd: the `size_arg` bytes given; msgrcv: the
    bytes the call returned)."""

    def __init__(self, size_arg: int, received: bool) -> None:
        self.size_arg = size_arg
        self.received = received

    def format(self, proc: GuestProcess, raw: int, args: tuple[int, ...], result: int) -> str:
        if self.received and result < 0:
            return f"{raw:#x}"
        size = result if self.received else args[self.size_arg]
        try:
            mtype = abi.MSGBUF_HEAD.unpack(proc.mem.read(raw, abi.MSGBUF_HEAD.size)).mtype
            text = proc.mem.read(raw + abi.MSGBUF_HEAD.size, min(size, 33))
        except GuestFault:
            return f"{raw:#x}"
        return f"{{{mtype}, {c_string_literal(text, 32)}}}"


SEMBUFS = SembufArray(2)


# ---- guest memory in, guest memory out -------------------------------------------------------


def _guest_in(proc: GuestProcess, address: int, size: int) -> ctypes.Array | int:
    """A host copy of guest [address, address+size), or an unmapped host address when the
    guest may not read it (the host kernel then says EFAULT where Linux would)."""
    try:
        data = proc.mem.read(address, size)
    except GuestFault:
        return UNMAPPED_HOST_ADDRESS
    return ctypes.create_string_buffer(data, size)


def _translate_in(proc: GuestProcess, address: int, guest: Layout, host: Layout):
    """A guest record at `address` as the host's record (a host buffer)."""
    try:
        data = proc.mem.read(address, guest.size)
    except GuestFault:
        return UNMAPPED_HOST_ADDRESS
    return ctypes.create_string_buffer(host.pack(guest.unpack(data)), host.size)


def _with_record_out(proc: GuestProcess, address: int, guest: Layout, host: Layout, call) -> int:
    """call(host buffer) fills a host record; the guest gets it in its own layout."""
    buffer = ctypes.create_string_buffer(host.size)
    result = call(buffer)
    proc.mem.write(address, guest.pack(host.unpack(buffer.raw)))
    return result


# ---- shared memory -------------------------------------------------------------------------


@syscall("shmget", IpcKey(), ULONG, SHMGET_FLAGS)
def shmget(proc: GuestProcess, key: int, size: int, flags: int) -> int:
    return host_syscall(HOST_SYS_SHMGET, key, size, flags)


@syscall("shmctl", INT, SHMCTL_CMD, PTR)
def shmctl(proc: GuestProcess, shmid: int, cmd: int, buf: int) -> int:
    def host(argument: object) -> int:
        return host_syscall(HOST_SYS_SHMCTL, shmid, cmd, argument)

    if cmd in (abi.IPC_STAT, abi.SHM_STAT, abi.SHM_STAT_ANY):
        return _with_record_out(proc, buf, abi.SHMID64_DS, abi.SHMID64_DS, host)
    if cmd == abi.IPC_SET:
        return host(_translate_in(proc, buf, abi.SHMID64_DS, abi.SHMID64_DS))
    if cmd == abi.IPC_INFO:
        return _with_record_out(proc, buf, abi.SHMINFO64, abi.SHMINFO64, host)
    if cmd == abi.SHM_INFO:
        return _with_record_out(proc, buf, abi.SHM_INFO_RECORD, abi.SHM_INFO_RECORD, host)
    return host(None)  # IPC_RMID, SHM_LOCK, SHM_UNLOCK; the host refuses other commands


def _host_mapping_facts(host_address: int) -> tuple[int, int, int, str]:
    """(size, device, inode, name) of the host mapping that starts at `host_address`, as the
    host kernel shows it in /proc/self/maps: the segment's shm file, its key in the name."""
    with open("/proc/self/maps", "rb") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split(b"-"))
            if start == host_address:
                major, minor = (int(x, 16) for x in fields[3].split(b":"))
                name = fields[5].strip().decode() if len(fields) > 5 else ""
                return end - start, (major << 8) | minor, int(fields[4]), name
    raise OSError(errno.EINVAL, "the host attachment is not in /proc/self/maps")


@syscall("shmat", INT, PTR, SHMAT_FLAGS, ret=Ret.HEX)
def shmat(proc: GuestProcess, shmid: int, address: int, flags: int) -> int:
    mem = proc.mem
    page = mem.page_size  # SHMLBA: PAGE_SIZE for 64-bit arm64 and riscv (asm-generic)
    if address:
        if address % page:
            if not flags & abi.SHM_RND:
                return -errno.EINVAL
            address -= address % page
            if address == 0 and flags & abi.SHM_REMAP:
                return -errno.EINVAL
    elif flags & abi.SHM_REMAP:
        return -errno.EINVAL
    # the host checks the id and the permissions, and attaches where it likes
    host_flags = flags & (abi.SHM_RDONLY | abi.SHM_EXEC)
    host_address = host_syscall(HOST_SYS_SHMAT, shmid, None, host_flags)
    try:
        size, device, inode, name = _host_mapping_facts(host_address)
        size = mem.page_align(size)
        if address:
            if address + size > proc.linux.task_size or address + size < address:
                raise OSError(errno.EINVAL, "past the end of the address space")
            if address < MIN_MAP_ADDRESS:
                raise OSError(errno.EPERM, "below mmap_min_addr")
            if not flags & abi.SHM_REMAP and not mem.is_free(address, address + size):
                raise OSError(errno.EINVAL, "the range is in use")
            start = address
        else:
            found = mem.find_free(size)
            if found is None:
                raise OSError(errno.ENOMEM, "no room for the segment")
            start = found
        read_only = bool(flags & abi.SHM_RDONLY)
        prot = PROT_READ | (0 if read_only else PROT_WRITE)
        prot |= PROT_EXEC if flags & abi.SHM_EXEC else 0
        mapping = mem.map(
            start, size, prot, name, host_address=host_address, device=device, inode=inode
        )
    except BaseException:
        host_syscall(HOST_SYS_SHMDT, host_address)
        raise
    mapping.may_write = not read_only  # mprotect(PROT_WRITE) of a SHM_RDONLY attach: EACCES
    return start


def _is_shm(mapping) -> bool:
    return mapping.shared and mapping.name.startswith("/SYSV") and mapping.offset == 0


@syscall("shmdt", PTR)
def shmdt(proc: GuestProcess, address: int) -> int:
    """As Linux: the attachment that starts at `address` (its first mapping at offset 0),
    with every later piece of the same segment at the offset it had there."""
    mem = proc.mem
    if address % mem.page_size:
        return -errno.EINVAL
    first = mem.find(address)
    if first is None or first.start != address or not _is_shm(first):
        return -errno.EINVAL
    end = first.end
    while True:
        following = mem.find(end)
        if (
            following is None
            or following.start != end
            or not following.shared
            or following.inode != first.inode
            or following.name != first.name
            or following.offset != following.start - address
        ):
            break
        end = following.end
    mem.unmap(address, end - address)  # releases the host pages: the host attachment goes
    return 0


# ---- semaphores ----------------------------------------------------------------------------


@syscall("semget", IpcKey(), INT, GET_FLAGS)
def semget(proc: GuestProcess, key: int, nsems: int, flags: int) -> int:
    return host_syscall(HOST_SYS_SEMGET, key, nsems, flags)


def _semaphore_count(semid: int) -> int:
    buffer = ctypes.create_string_buffer(abi.HOST_SEMID64_DS.size)
    host_syscall(HOST_SYS_SEMCTL, semid, 0, abi.IPC_STAT, buffer)
    return abi.HOST_SEMID64_DS.unpack(buffer.raw).sem_nsems


@syscall("semctl", INT, INT, SEMCTL_CMD, PTR)  # union semun: shown as a pointer
def semctl(proc: GuestProcess, semid: int, semnum: int, cmd: int, arg: int) -> int:
    """arg is union semun, passed by value: an int (SETVAL) or a pointer."""

    def host(argument: object) -> int:
        return host_syscall(HOST_SYS_SEMCTL, semid, semnum, cmd, argument)

    if cmd in (abi.IPC_STAT, abi.SEM_STAT, abi.SEM_STAT_ANY):
        return _with_record_out(proc, arg, abi.SEMID64_DS, abi.HOST_SEMID64_DS, host)
    if cmd == abi.IPC_SET:
        return host(_translate_in(proc, arg, abi.SEMID64_DS, abi.HOST_SEMID64_DS))
    if cmd in (abi.IPC_INFO, abi.SEM_INFO):
        return _with_record_out(proc, arg, abi.SEMINFO, abi.SEMINFO, host)
    if cmd == abi.SETVAL:
        return host(s32(arg))
    if cmd == abi.GETALL:
        values = ctypes.create_string_buffer(2 * _semaphore_count(semid))
        result = host(values)
        proc.mem.write(arg, values.raw)
        return result
    if cmd == abi.SETALL:
        return host(_guest_in(proc, arg, 2 * _semaphore_count(semid)))
    return host(None)  # IPC_RMID, GETVAL, GETPID, GETNCNT, GETZCNT; the host refuses others


def _semtimedop(proc: GuestProcess, semid: int, sops: int, nsops: int, timeout: int) -> int:
    count = nsops & 0xFFFF_FFFF_FFFF_FFFF
    # nsops 0 or above SEMOPM: the host says EINVAL / E2BIG before it reads anything
    operations = (
        _guest_in(proc, sops, count * abi.SEMBUF.size)
        if 0 < count <= 1 << 16
        else UNMAPPED_HOST_ADDRESS
    )
    limit = _guest_in(proc, timeout, _TIMESPEC_SIZE) if timeout else None
    return host_syscall(HOST_SYS_SEMTIMEDOP, semid, operations, nsops, limit)


@syscall("semop", INT, SEMBUFS, ULONG, blocks=True, restart=False)
def semop(proc: GuestProcess, semid: int, sops: int, nsops: int) -> int:
    return _semtimedop(proc, semid, sops, nsops, 0)


@syscall("semtimedop", INT, SEMBUFS, ULONG, PTR, blocks=True, restart=False)
def semtimedop(proc: GuestProcess, semid: int, sops: int, nsops: int, timeout: int) -> int:
    return _semtimedop(proc, semid, sops, nsops, timeout)


# ---- message queues ------------------------------------------------------------------------


@syscall("msgget", IpcKey(), GET_FLAGS)
def msgget(proc: GuestProcess, key: int, flags: int) -> int:
    return host_syscall(HOST_SYS_MSGGET, key, flags)


@syscall("msgsnd", INT, Msgbuf(2, received=False), ULONG, MSG_FLAGS, blocks=True, restart=False)
def msgsnd(proc: GuestProcess, msqid: int, msgp: int, size: int, flags: int) -> int:
    # Linux reads mtype first (EFAULT), then refuses a bad size (EINVAL): for a size no
    # message may have, the host gets the type alone, and says EINVAL (msgsnd02's -1)
    message = _guest_in(proc, msgp, abi.MSGBUF_HEAD.size + (size if size <= _MESSAGE_LIMIT else 0))
    return host_syscall(HOST_SYS_MSGSND, msqid, message, size, flags)


@syscall(
    "msgrcv", INT, Msgbuf(2, received=True), ULONG, LONG, MSG_FLAGS, blocks=True, restart=False
)
def msgrcv(proc: GuestProcess, msqid: int, msgp: int, size: int, msgtyp: int, flags: int) -> int:
    if size >> 63:  # a negative size_t: the host says EINVAL
        return host_syscall(HOST_SYS_MSGRCV, msqid, None, size, msgtyp, flags)
    room = min(size, _MESSAGE_LIMIT)
    buffer = ctypes.create_string_buffer(abi.MSGBUF_HEAD.size + room)
    received = host_syscall(HOST_SYS_MSGRCV, msqid, buffer, room, msgtyp, flags)
    # as Linux: the message has left the queue, a bad buffer loses it (EFAULT)
    proc.mem.write(msgp, buffer.raw[: abi.MSGBUF_HEAD.size + received])
    return received


@syscall("msgctl", INT, MSGCTL_CMD, PTR)
def msgctl(proc: GuestProcess, msqid: int, cmd: int, buf: int) -> int:
    def host(argument: object) -> int:
        return host_syscall(HOST_SYS_MSGCTL, msqid, cmd, argument)

    if cmd in (abi.IPC_STAT, abi.MSG_STAT, abi.MSG_STAT_ANY):
        return _with_record_out(proc, buf, abi.MSQID64_DS, abi.MSQID64_DS, host)
    if cmd == abi.IPC_SET:
        return host(_translate_in(proc, buf, abi.MSQID64_DS, abi.MSQID64_DS))
    if cmd in (abi.IPC_INFO, abi.MSG_INFO):
        return _with_record_out(proc, buf, abi.MSGINFO, abi.MSGINFO, host)
    return host(None)  # IPC_RMID; the host refuses other commands
