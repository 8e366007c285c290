"""A small flattened-device-tree (DTB, version 17) writer.

The board builds a tree of `Node`s from its device list; `Node.to_dtb()` serialises it. Only
writing is needed: the guest reads the tree, we never parse one (a `-dtb` file is passed as is).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 1
FDT_END_NODE = 2
FDT_PROP = 3
FDT_END = 9
_HEADER_SIZE = 40

PropValue = bytes | str | int | list[int] | list[str] | None


def cells(*values: int) -> list[int]:
    """Spell a list of 32-bit cells (an address or size of two cells is two entries)."""
    return list(values)


def u64_cells(value: int) -> list[int]:
    """A 64-bit value as two 32-bit cells, high first (#address-cells = 2 convention)."""
    return [value >> 32, value & 0xFFFF_FFFF]


def encode_value(value: PropValue) -> bytes:
    """Encode a property value as the DTB does: int = one cell, str NUL-terminated, empty flag."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode() + b"\0"
    if isinstance(value, int):
        return struct.pack(">I", value)
    if all(isinstance(v, str) for v in value):
        return b"".join(str(v).encode() + b"\0" for v in value)
    return b"".join(struct.pack(">I", int(v)) for v in value)


@dataclass
class Node:
    name: str
    props: dict[str, PropValue] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def child(self, name: str, **props: PropValue) -> Node:
        """Add and return a child node; keyword names use '_' for '-' and '__' for ','."""
        node = Node(name, {_prop_name(k): v for k, v in props.items()})
        self.children.append(node)
        return node

    def set(self, name: str, value: PropValue) -> None:
        self.props[name] = value

    def find(self, path: str) -> Node | None:
        """Find a descendant by a slash-separated path of node names ('' is self)."""
        node: Node | None = self
        for part in filter(None, path.split("/")):
            assert node is not None
            node = next((c for c in node.children if c.name == part), None)
            if node is None:
                return None
        return node

    def to_dtb(self, boot_cpuid: int = 0) -> bytes:
        strings = bytearray()
        offsets: dict[str, int] = {}
        struct_block = bytearray()

        def string_offset(name: str) -> int:
            if name not in offsets:
                offsets[name] = len(strings)
                strings.extend(name.encode() + b"\0")
            return offsets[name]

        def emit(node: Node) -> None:
            struct_block.extend(struct.pack(">I", FDT_BEGIN_NODE))
            struct_block.extend(_pad(node.name.encode() + b"\0"))
            for name, value in node.props.items():
                data = encode_value(value)
                struct_block.extend(struct.pack(">III", FDT_PROP, len(data), string_offset(name)))
                struct_block.extend(_pad(data))
            for child in node.children:
                emit(child)
            struct_block.extend(struct.pack(">I", FDT_END_NODE))

        emit(self)
        struct_block.extend(struct.pack(">I", FDT_END))
        rsvmap = bytes(16)  # an empty memory-reservation map: one all-zero entry
        off_rsvmap = _HEADER_SIZE
        off_struct = off_rsvmap + len(rsvmap)
        off_strings = off_struct + len(struct_block)
        total = off_strings + len(strings)
        header = struct.pack(
            ">10I",
            FDT_MAGIC,
            total,
            off_struct,
            off_strings,
            off_rsvmap,
            17,
            16,
            boot_cpuid,
            len(strings),
            len(struct_block),
        )
        return header + rsvmap + bytes(struct_block) + bytes(strings)


# The devicetree spec's own names that really contain '_' (not a spelling of '-').
_UNDERSCORE_NAMES = frozenset({"device_type"})


def _prop_name(key: str) -> str:
    if key in _UNDERSCORE_NAMES:
        return key
    return key.replace("__", ",").replace("_", "-")


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)
