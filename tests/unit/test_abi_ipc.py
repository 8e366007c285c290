"""System V IPC layouts (qemuser/syscalls/abi/ipc.py): sizes and offsets as the headers they
cite give them, and the same numbers held against the compilers themselves: offsetof() in the
kernel's uapi structs for aarch64 and riscv64 (the guest) and x86_64 (the host), checked by
_Static_assert at compile time."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from qemuser.syscalls.abi import ipc
from qemuser.syscalls.abi.layout import Layout

PERM_OFFSETS = {
    "perm_key": 0,
    "perm_uid": 4,
    "perm_gid": 8,
    "perm_cuid": 12,
    "perm_cgid": 16,
    "perm_mode": 20,
    "perm_seq": 24,
    "__perm_pad2": 26,
    "__perm_unused1": 32,
    "__perm_unused2": 40,
}


@pytest.mark.parametrize(
    ("layout", "size", "offsets"),
    [
        (ipc.IPC64_PERM, 48, PERM_OFFSETS),
        (
            ipc.SHMID64_DS,
            112,
            {
                **PERM_OFFSETS,
                "shm_segsz": 48,
                "shm_atime": 56,
                "shm_dtime": 64,
                "shm_ctime": 72,
                "shm_cpid": 80,
                "shm_lpid": 84,
                "shm_nattch": 88,
                "__unused4": 96,
                "__unused5": 104,
            },
        ),
        (
            ipc.SEMID64_DS,
            88,
            {
                **PERM_OFFSETS,
                "sem_otime": 48,
                "sem_ctime": 56,
                "sem_nsems": 64,
                "__unused3": 72,
                "__unused4": 80,
            },
        ),
        (
            ipc.HOST_SEMID64_DS,
            104,
            {
                **PERM_OFFSETS,
                "sem_otime": 48,
                "__unused1": 56,
                "sem_ctime": 64,
                "__unused2": 72,
                "sem_nsems": 80,
                "__unused3": 88,
                "__unused4": 96,
            },
        ),
        (
            ipc.MSQID64_DS,
            120,
            {
                **PERM_OFFSETS,
                "msg_stime": 48,
                "msg_rtime": 56,
                "msg_ctime": 64,
                "msg_cbytes": 72,
                "msg_qnum": 80,
                "msg_qbytes": 88,
                "msg_lspid": 96,
                "msg_lrpid": 100,
                "__unused4": 104,
                "__unused5": 112,
            },
        ),
        (ipc.SEMBUF, 6, {"sem_num": 0, "sem_op": 2, "sem_flg": 4}),
        (ipc.MSGBUF_HEAD, 8, {"mtype": 0}),
        (ipc.SHMINFO64, 72, {"shmmax": 0, "shmall": 32, "__unused4": 64}),
        (ipc.SHM_INFO_RECORD, 48, {"used_ids": 0, "shm_tot": 8, "swap_successes": 40}),
        (ipc.SEMINFO, 40, {"semmap": 0, "semaem": 36}),
        (ipc.MSGINFO, 32, {"msgpool": 0, "msgtql": 24, "msgseg": 28}),
    ],
)
def test_layout_size_and_offsets(layout: Layout, size: int, offsets: dict[str, int]) -> None:
    assert layout.size == size
    for name, offset in offsets.items():
        assert layout.offsets[name] == offset, name


def test_semid64_ds_translates_between_guest_and_host() -> None:
    record = ipc.SemidDs(0x51, 1000, 1001, 1002, 1003, 0o1600, 7, 111, 222, 3)
    host_bytes = ipc.HOST_SEMID64_DS.pack(record)
    assert ipc.HOST_SEMID64_DS.unpack(host_bytes) == record
    guest_bytes = ipc.SEMID64_DS.pack(ipc.HOST_SEMID64_DS.unpack(host_bytes))
    assert guest_bytes[48:72] == (111).to_bytes(8, "little") + (222).to_bytes(8, "little") + (
        3
    ).to_bytes(8, "little")
    assert ipc.perm_of(record) == ipc.IpcPerm(0x51, 1000, 1001, 1002, 1003, 0o1600, 7)


# (C struct, layout, {layout field: C member}) for the compilers' own offsetof()
_PERM_MEMBERS = {
    "perm_key": "key",
    "perm_uid": "uid",
    "perm_gid": "gid",
    "perm_cuid": "cuid",
    "perm_cgid": "cgid",
    "perm_mode": "mode",
    "perm_seq": "seq",
}


def _members(layout: Layout, perm: str | None) -> dict[str, str]:
    members = {}
    for name in layout.offsets:
        if name.startswith("__perm"):
            continue
        if name in _PERM_MEMBERS:
            if perm is None:
                members[name] = _PERM_MEMBERS[name]
            else:
                members[name] = f"{perm}.{_PERM_MEMBERS[name]}"
        else:
            members[name] = name
    return members


GUEST_STRUCTS = [
    ("struct ipc64_perm", ipc.IPC64_PERM, None),
    ("struct shmid64_ds", ipc.SHMID64_DS, "shm_perm"),
    ("struct semid64_ds", ipc.SEMID64_DS, "sem_perm"),
    ("struct msqid64_ds", ipc.MSQID64_DS, "msg_perm"),
    ("struct sembuf", ipc.SEMBUF, None),
    ("struct shminfo64", ipc.SHMINFO64, None),
    ("struct shm_info", ipc.SHM_INFO_RECORD, None),
    ("struct seminfo", ipc.SEMINFO, None),
    ("struct msginfo", ipc.MSGINFO, None),
]


def _assertions(structs: list[tuple[str, Layout, str | None]]) -> str:
    lines = [
        "#include <stddef.h>",
        "#include <linux/ipc.h>",
        "#include <linux/shm.h>",
        "#include <linux/sem.h>",
        "#include <linux/msg.h>",
        "#include <asm/ipcbuf.h>",
        "#include <asm/shmbuf.h>",
        "#include <asm/sembuf.h>",
        "#include <asm/msgbuf.h>",
    ]
    for c_name, layout, perm in structs:
        lines.append(f'_Static_assert(sizeof({c_name}) == {layout.size}, "{c_name} size");')
        for field, member in _members(layout, perm).items():
            offset = layout.offsets[field]
            lines.append(
                f'_Static_assert(offsetof({c_name}, {member}) == {offset}, "{c_name}.{member}");'
            )
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("compiler", "structs"),
    [
        ("aarch64-linux-gnu-gcc", GUEST_STRUCTS),
        ("riscv64-linux-gnu-gcc", GUEST_STRUCTS),
        (
            "gcc",
            [(c, layout, perm) for c, layout, perm in GUEST_STRUCTS if layout is not ipc.SEMID64_DS]
            + [("struct semid64_ds", ipc.HOST_SEMID64_DS, "sem_perm")],
        ),
    ],
)
def test_layouts_match_the_compilers_offsetof(
    compiler: str, structs: list[tuple[str, Layout, str | None]], tmp_path: Path
) -> None:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed (setup.sh installs the cross compilers)")
    source = tmp_path / "ipc_layouts.c"
    source.write_text(_assertions(structs))
    result = subprocess.run(
        [compiler, "-fsyntax-only", str(source)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
