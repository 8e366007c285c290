"""System V IPC (issue 11, defect 7): shared memory, semaphores and message queues as the host
kernel's objects, shared with forked children and with host processes
(tests/fixtures/sysv_ipc.c). Each run prints what the same source prints built natively; the
host's side of the exchange is checked here, through the host's own shmat/msgrcv.
Before qemuser/syscalls/ipc.py every one of these calls was ENOSYS."""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Iterator

import pytest

from tests.conftest import all_builds, fixture_path, run_guest, run_like_native

_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p
_libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.shmdt.argtypes = [ctypes.c_void_p]
_libc.msgrcv.restype = ctypes.c_ssize_t
_libc.msgrcv.argtypes = [
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_long,
    ctypes.c_int,
]
IPC_PRIVATE, IPC_CREAT, IPC_NOWAIT, IPC_RMID = 0, 0o1000, 0o4000, 0


def _check(result: int, what: str) -> int:
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


class HostObjects:
    """A segment holding a greeting and a message queue, made by this (host) process."""

    def __init__(self) -> None:
        self.shmid = _check(_libc.shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0o600), "shmget")
        self.msqid = _check(_libc.msgget(IPC_PRIVATE, IPC_CREAT | 0o600), "msgget")
        address = _libc.shmat(self.shmid, None, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "shmat")
        self.address = address
        ctypes.memmove(address, b"hello from the host\0", 20)

    def text_at(self, offset: int) -> bytes:
        return ctypes.string_at(self.address + offset)

    def receive(self) -> tuple[int, bytes] | None:
        buffer = ctypes.create_string_buffer(8 + 64)
        n = _libc.msgrcv(self.msqid, buffer, 64, 0, IPC_NOWAIT)
        if n < 0:
            return None
        return int.from_bytes(buffer.raw[:8], "little"), buffer.raw[8 : 8 + n]

    def remove(self) -> None:
        _libc.shmdt(self.address)
        _libc.shmctl(self.shmid, IPC_RMID, None)
        _libc.msgctl(self.msqid, IPC_RMID, None)


@pytest.fixture
def host_objects() -> Iterator[HostObjects]:
    objects = HostObjects()
    yield objects
    objects.remove()


def _remove_segment_with_key(key: int) -> None:
    """What a run that died half-way left behind (each run removes its own when it ends)."""
    shmid = _libc.shmget(key, 0, 0)
    if shmid >= 0:
        _libc.shmctl(shmid, IPC_RMID, None)


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sysv_ipc"))
def test_sysv_ipc_behaves_as_on_linux(
    arch: str, flavour: str, host_objects: HostObjects, tmp_path
) -> None:
    key = 0x51000000 | (os.getpid() & 0xFFFF) << 8 | len(arch + flavour)
    try:
        result = run_like_native(
            arch,
            "sysv_ipc",
            flavour,
            f"{key:x}",
            str(host_objects.shmid),
            str(host_objects.msqid),
            status=0,
            workdir=tmp_path,
            timeout=120,
        )
    finally:
        _remove_segment_with_key(key)
    assert result.stderr == b""
    # the native run and then the guest each answered through the host's objects
    assert host_objects.text_at(0) == b"hello from the host"
    assert host_objects.text_at(100) == b"hello from the guest"
    assert host_objects.receive() == (7, b"to the host\0")  # the native run's
    assert host_objects.receive() == (7, b"to the host\0")  # the guest's
    assert host_objects.receive() is None


# -strace lines (after "PID "), with ID for an IPC id, KEY for the key and 0xADDR for an address
STRACE_LINES = [
    "shmget(KEY,8292,IPC_CREAT|IPC_EXCL|0640) = ID",
    "shmget(IPC_PRIVATE,0,IPC_CREAT|0600) = -1 errno=22 (EINVAL: Invalid argument)",
    "shmat(ID,NULL,SHM_RDONLY) = 0xADDR",
    "shmat(ID,0xADDR,SHM_RND) = 0xADDR",
    "shmdt(0xADDR) = 0",
    "shmctl(ID,IPC_STAT,0x8) = -1 errno=14 (EFAULT: Bad address)",
    "semget(IPC_PRIVATE,3,IPC_CREAT|0600) = ID",
    "semtimedop(ID,[{sem_num=2, sem_op=5, sem_flg=SEM_UNDO}],1,NULL) = 0",
    "semctl(ID,2,GETVAL,NULL) = 4",
    'msgsnd(ID,{1, "hello\\0"},6,0) = 0',
    'msgrcv(ID,{2, "world\\0"},32,2,0) = 6',
    "msgrcv(ID,0xADDR,32,0,IPC_NOWAIT) = -1 errno=42 (ENOMSG: No message of desired type)",
    "msgctl(ID,IPC_RMID,NULL) = 0",
]


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_strace_decodes_them(arch: str, tmp_path) -> None:
    key = 0x51000000 | (os.getpid() & 0xFFFF) << 8 | 0xFF
    try:
        result = run_guest(
            arch, fixture_path(arch, "sysv_ipc"), f"{key:x}", options=("-strace",), cwd=tmp_path
        )
    finally:
        _remove_segment_with_key(key)
    assert result.returncode == 0
    shown = set()
    for line in result.stderr.decode().splitlines():
        call = line.partition(" ")[2].replace(f"{key:#x}", "KEY")
        call = re.sub(r"0x[0-9a-f]{3,}", "0xADDR", call)
        call = re.sub(r"^(\w+\()\d+,", r"\1ID,", call)
        shown.add(re.sub(r"= \d{3,}$", "= ID", call))
    for expected in STRACE_LINES:
        assert expected in shown, expected
