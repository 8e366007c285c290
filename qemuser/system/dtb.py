"""Reading a flattened device tree (a `-dtb FILE`) into `fdt.Node`s, so that the machine can
fill /chosen as QEMU does (bootargs, the initrd's bounds) before the guest sees it.

Property values stay raw bytes; the writer (fdt.py) passes bytes through unchanged. Errors use
libfdt's names (FDT_ERR_BADMAGIC, ...), which QEMU's messages quote.
"""

from __future__ import annotations

import struct

from qemuser.system.fdt import FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_MAGIC, FDT_PROP, Node

FDT_NOP = 4


class DtbError(Exception):
    """A blob that is not a device tree; the message is libfdt's error name."""


def parse_dtb(data: bytes) -> Node:
    """The tree of a DTB blob (versions 16 and 17); raises DtbError."""
    if len(data) < 40:
        raise DtbError(
            "FDT_ERR_TRUNCATED" if data[:4] == FDT_MAGIC.to_bytes(4, "big") else "FDT_ERR_BADMAGIC"
        )
    magic, total, off_struct, off_strings, _rsv, version, _last, _cpu, size_strings = (
        struct.unpack_from(">9I", data)
    )
    if magic != FDT_MAGIC:
        raise DtbError("FDT_ERR_BADMAGIC")
    if version < 16:
        raise DtbError("FDT_ERR_BADVERSION")
    if total > len(data) or off_struct >= total or off_strings + size_strings > total:
        raise DtbError("FDT_ERR_TRUNCATED")
    strings = data[off_strings : off_strings + size_strings]
    pos = off_struct
    stack: list[Node] = []
    root: Node | None = None

    def word() -> int:
        nonlocal pos
        if pos + 4 > total:
            raise DtbError("FDT_ERR_TRUNCATED")
        (value,) = struct.unpack_from(">I", data, pos)
        pos += 4
        return value

    while True:
        token = word()
        if token == FDT_BEGIN_NODE:
            end = data.find(b"\0", pos, total)
            if end < 0:
                raise DtbError("FDT_ERR_TRUNCATED")
            node = Node(data[pos:end].decode(errors="replace"))
            pos = (end + 4) & ~3
            if stack:
                stack[-1].children.append(node)
            elif root is None:
                root = node
            else:
                raise DtbError("FDT_ERR_BADSTRUCTURE")
            stack.append(node)
        elif token == FDT_PROP:
            length, name_off = word(), word()
            if not stack or pos + length > total:
                raise DtbError("FDT_ERR_BADSTRUCTURE")
            name_end = strings.find(b"\0", name_off)
            if name_end < 0:
                raise DtbError("FDT_ERR_BADOFFSET")
            stack[-1].props[strings[name_off:name_end].decode()] = bytes(data[pos : pos + length])
            pos = (pos + length + 3) & ~3
        elif token == FDT_END_NODE:
            if not stack:
                raise DtbError("FDT_ERR_BADSTRUCTURE")
            stack.pop()
        elif token == FDT_END:
            break
        elif token != FDT_NOP:
            raise DtbError("FDT_ERR_BADSTRUCTURE")
    if root is None or stack:
        raise DtbError("FDT_ERR_BADSTRUCTURE")
    return root
