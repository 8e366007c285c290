"""struct linux_dirent64 (include/linux/dirent.h, as getdents64 writes it): u64 d_ino,
s64 d_off, unsigned short d_reclen, unsigned char d_type, then the NUL-terminated name, the
record padded to 8 bytes. Fixed-width fields, so the guest's records equal the host's; they are
still re-encoded one by one through this layout.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout


class Dirent64(NamedTuple):
    d_ino: int
    d_off: int
    d_reclen: int
    d_type: int


# the fixed head: d_name follows at offsetof(d_name) = 19
DIRENT64 = Layout(
    "linux_dirent64",
    Dirent64,
    [("d_ino", "Q"), ("d_off", "q"), ("d_reclen", "H"), ("d_type", "B")],
)


def guest_dirents(host_records: bytes, hidden: frozenset[bytes] = frozenset()) -> bytes:
    """The guest's getdents64 buffer for the host's records (same order, same lengths), less
    the entries named in `hidden`."""
    out = []
    pos = 0
    while pos < len(host_records):
        header = DIRENT64.unpack(host_records, pos)
        length = header.d_reclen
        assert length >= DIRENT64.size
        name = host_records[pos + DIRENT64.size : pos + length].split(b"\0", 1)[0]
        pos += length
        if name in hidden:
            continue
        record = DIRENT64.pack(header) + name + b"\0"
        out.append(record + bytes(length - len(record)))
    return b"".join(out)
