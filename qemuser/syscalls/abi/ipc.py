"""System V IPC records: ipc64_perm, shmid64_ds, semid64_ds, msqid64_ds, sembuf, msgbuf, and
the *_INFO records, for the guest and for the x86_64 host.

Guest (aarch64, riscv64: 64-bit asm-generic):
- struct ipc64_perm: include/uapi/asm-generic/ipcbuf.h (48 bytes: mode is a 4-byte
  __kernel_mode_t, so __pad1 is empty);
- struct shmid64_ds, struct shminfo64: include/uapi/asm-generic/shmbuf.h (the
  __BITS_PER_LONG == 64 branch: one long per time, no *_high words);
- struct semid64_ds: include/uapi/asm-generic/sembuf.h;
- struct msqid64_ds: include/uapi/asm-generic/msgbuf.h;
- struct sembuf, struct seminfo: include/uapi/linux/sem.h; struct msgbuf, struct msginfo:
  include/uapi/linux/msg.h; struct shm_info: include/uapi/linux/shm.h.

The x86_64 host uses asm-generic's ipcbuf.h, shmbuf.h and msgbuf.h as they are, but its own
arch/x86/include/uapi/asm/sembuf.h, which puts an unused word after each time (104 bytes, not
88): a semid64_ds is translated field by field, the other records have one layout for both.
An ipc64_perm is kept flat inside each *_ds record (fields perm_key ... perm_seq).
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout

# include/uapi/linux/ipc.h
IPC_PRIVATE = 0
IPC_CREAT = 0o1000
IPC_EXCL = 0o2000
IPC_NOWAIT = 0o4000
IPC_RMID = 0
IPC_SET = 1
IPC_STAT = 2
IPC_INFO = 3
IPC_64 = 0x100  # only architectures that parse an IPC version (not ours) accept it

# include/uapi/linux/shm.h
SHM_HUGETLB = 0o4000
SHM_NORESERVE = 0o10000
SHM_RDONLY = 0o10000
SHM_RND = 0o20000
SHM_REMAP = 0o40000
SHM_EXEC = 0o100000
SHM_LOCK = 11
SHM_UNLOCK = 12
SHM_STAT = 13
SHM_INFO = 14
SHM_STAT_ANY = 15
SHM_DEST = 0o1000  # in shm_perm.mode: removed, waiting for its last detach

# include/uapi/linux/sem.h
SEM_UNDO = 0x1000
GETPID = 11
GETVAL = 12
GETALL = 13
GETNCNT = 14
GETZCNT = 15
SETVAL = 16
SETALL = 17
SEM_STAT = 18
SEM_INFO = 19
SEM_STAT_ANY = 20

# include/uapi/linux/msg.h
MSG_STAT = 11
MSG_INFO = 12
MSG_STAT_ANY = 13
MSG_NOERROR = 0o10000
MSG_EXCEPT = 0o20000
MSG_COPY = 0o40000

_PERM_FIELDS = [
    ("perm_key", "i"),
    ("perm_uid", "I"),
    ("perm_gid", "I"),
    ("perm_cuid", "I"),
    ("perm_cgid", "I"),
    ("perm_mode", "I"),
    ("perm_seq", "H"),
    ("__perm_pad2", "6x"),  # __pad2 and the hole before the 8-byte words
    ("__perm_unused1", "8x"),
    ("__perm_unused2", "8x"),
]


class IpcPerm(NamedTuple):
    perm_key: int
    perm_uid: int
    perm_gid: int
    perm_cuid: int
    perm_cgid: int
    perm_mode: int
    perm_seq: int


IPC64_PERM = Layout("ipc64_perm", IpcPerm, _PERM_FIELDS)


class ShmidDs(NamedTuple):
    perm_key: int
    perm_uid: int
    perm_gid: int
    perm_cuid: int
    perm_cgid: int
    perm_mode: int
    perm_seq: int
    shm_segsz: int
    shm_atime: int
    shm_dtime: int
    shm_ctime: int
    shm_cpid: int
    shm_lpid: int
    shm_nattch: int


SHMID64_DS = Layout(
    "shmid64_ds",
    ShmidDs,
    [
        *_PERM_FIELDS,
        ("shm_segsz", "Q"),
        ("shm_atime", "q"),
        ("shm_dtime", "q"),
        ("shm_ctime", "q"),
        ("shm_cpid", "i"),
        ("shm_lpid", "i"),
        ("shm_nattch", "Q"),
        ("__unused4", "8x"),
        ("__unused5", "8x"),
    ],
)


class SemidDs(NamedTuple):
    perm_key: int
    perm_uid: int
    perm_gid: int
    perm_cuid: int
    perm_cgid: int
    perm_mode: int
    perm_seq: int
    sem_otime: int
    sem_ctime: int
    sem_nsems: int


SEMID64_DS = Layout(
    "semid64_ds",
    SemidDs,
    [
        *_PERM_FIELDS,
        ("sem_otime", "q"),
        ("sem_ctime", "q"),
        ("sem_nsems", "Q"),
        ("__unused3", "8x"),
        ("__unused4", "8x"),
    ],
)

# the x86_64 host's (arch/x86/include/uapi/asm/sembuf.h): a reserved word after each time
HOST_SEMID64_DS = Layout(
    "semid64_ds (x86_64)",
    SemidDs,
    [
        *_PERM_FIELDS,
        ("sem_otime", "q"),
        ("__unused1", "8x"),
        ("sem_ctime", "q"),
        ("__unused2", "8x"),
        ("sem_nsems", "Q"),
        ("__unused3", "8x"),
        ("__unused4", "8x"),
    ],
)


class MsqidDs(NamedTuple):
    perm_key: int
    perm_uid: int
    perm_gid: int
    perm_cuid: int
    perm_cgid: int
    perm_mode: int
    perm_seq: int
    msg_stime: int
    msg_rtime: int
    msg_ctime: int
    msg_cbytes: int
    msg_qnum: int
    msg_qbytes: int
    msg_lspid: int
    msg_lrpid: int


MSQID64_DS = Layout(
    "msqid64_ds",
    MsqidDs,
    [
        *_PERM_FIELDS,
        ("msg_stime", "q"),
        ("msg_rtime", "q"),
        ("msg_ctime", "q"),
        ("msg_cbytes", "Q"),
        ("msg_qnum", "Q"),
        ("msg_qbytes", "Q"),
        ("msg_lspid", "i"),
        ("msg_lrpid", "i"),
        ("__unused4", "8x"),
        ("__unused5", "8x"),
    ],
)


class Sembuf(NamedTuple):
    sem_num: int
    sem_op: int
    sem_flg: int


SEMBUF = Layout("sembuf", Sembuf, [("sem_num", "H"), ("sem_op", "h"), ("sem_flg", "h")])


class MsgbufHead(NamedTuple):
    mtype: int


# struct msgbuf { __kernel_long_t mtype; char mtext[]; }: the text follows the 8-byte type
MSGBUF_HEAD = Layout("msgbuf", MsgbufHead, [("mtype", "q")])


class Shminfo(NamedTuple):
    shmmax: int
    shmmin: int
    shmmni: int
    shmseg: int
    shmall: int


SHMINFO64 = Layout(
    "shminfo64",
    Shminfo,
    [
        ("shmmax", "Q"),
        ("shmmin", "Q"),
        ("shmmni", "Q"),
        ("shmseg", "Q"),
        ("shmall", "Q"),
        ("__unused1", "8x"),
        ("__unused2", "8x"),
        ("__unused3", "8x"),
        ("__unused4", "8x"),
    ],
)


class ShmInfo(NamedTuple):
    used_ids: int
    shm_tot: int
    shm_rss: int
    shm_swp: int
    swap_attempts: int
    swap_successes: int


SHM_INFO_RECORD = Layout(
    "shm_info",
    ShmInfo,
    [
        ("used_ids", "i"),
        ("shm_tot", "Q"),
        ("shm_rss", "Q"),
        ("shm_swp", "Q"),
        ("swap_attempts", "Q"),
        ("swap_successes", "Q"),
    ],
)


class Seminfo(NamedTuple):
    semmap: int
    semmni: int
    semmns: int
    semmnu: int
    semmsl: int
    semopm: int
    semume: int
    semusz: int
    semvmx: int
    semaem: int


SEMINFO = Layout("seminfo", Seminfo, [(name, "i") for name in Seminfo._fields])


class Msginfo(NamedTuple):
    msgpool: int
    msgmap: int
    msgmax: int
    msgmnb: int
    msgmni: int
    msgssz: int
    msgtql: int
    msgseg: int


MSGINFO = Layout(
    "msginfo",
    Msginfo,
    [*[(name, "i") for name in Msginfo._fields[:-1]], ("msgseg", "H")],
    size=32,  # the tail padding to the ints' alignment
)


def perm_of(record: ShmidDs | SemidDs | MsqidDs) -> IpcPerm:
    """The ipc64_perm part of a *_ds record."""
    return IpcPerm(*record[: len(IpcPerm._fields)])
