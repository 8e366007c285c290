"""A tiny explicit-layout helper: named fields over struct formats, with size and offsets.

Guest structs are packed from named values here, never copied from a host struct.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable


class Layout:
    """An ordered list of (name, struct code) fields, little-endian, natural alignment."""

    def __init__(self, name: str, fields: Iterable[tuple[str, str]], size: int | None = None):
        self.name = name
        self.fields = tuple(fields)
        fmt = "<"
        offsets: dict[str, int] = {}
        offset = 0
        for field_name, code in self.fields:
            align = struct.calcsize("<" + code[-1]) if code[-1] not in "sx" else 1
            pad = (-offset) % align
            if pad:
                fmt += f"{pad}x"
                offset += pad
            offsets[field_name] = offset
            fmt += code
            offset += struct.calcsize("<" + code)
        if size is not None:
            if size < offset:
                raise ValueError(f"{name}: fields take {offset} bytes, more than {size}")
            fmt += f"{size - offset}x" if size > offset else ""
            offset = size
        self.struct = struct.Struct(fmt)
        self.offsets = offsets
        self.size = self.struct.size
        assert self.size == offset

    def pack(self, **values: object) -> bytes:
        """Fields not given are zero."""
        args = []
        for field_name, code in self.fields:
            default: object = b"" if code[-1] == "s" else 0
            args.append(values.get(field_name, default))
        return self.struct.pack(*args)

    def unpack(self, data: bytes) -> dict[str, object]:
        values = self.struct.unpack(data[: self.size])
        return dict(zip((f for f, _ in self.fields), values))
