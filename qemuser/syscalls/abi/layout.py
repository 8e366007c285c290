"""A tiny explicit-layout helper: named fields over struct formats, with size and offsets.

Guest structs are packed from named values here, never copied from a host struct. Each layout
names a typed record (a NamedTuple whose fields are the layout's, in order) that `unpack`
returns, so a handler reads `spec.tv_sec`, not `fields["tv_sec"]`.

A field's code is a struct code with an optional count:
- "q", "I", ...: one integer;
- "16s": a bytes value of that length (char arrays, opaque unions, network-order fields);
- "3Q": an array, whose value is a tuple of that many integers;
- "4x": padding or a reserved field: it has an offset (so tests can check it against the
  header) but no value in the record, and is written as zero bytes.
Fields are aligned naturally (to their element's size), little-endian, as on aarch64 and
riscv64 (unless `packed`); `size` adds the tail padding a C compiler puts after the last field.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from typing import Any, Generic, NamedTuple, TypeVar

R = TypeVar("R", bound=tuple[Any, ...])

_CODE = re.compile(r"(\d*)([a-zA-Z?])")


class _Field(NamedTuple):
    name: str
    code: str
    count: int  # how many struct items it unpacks to: 0 for padding, >1 for arrays
    default: object


def _parse(name: str, code: str) -> tuple[int, int, _Field]:
    """(alignment, size, field) of one field code."""
    match = _CODE.fullmatch(code)
    if not match:
        raise ValueError(f"field {name}: bad code {code!r}")
    count = int(match.group(1) or 1)
    kind = match.group(2)
    size = struct.calcsize("<" + code)
    if kind == "x":
        return 1, size, _Field(name, code, 0, None)
    if kind == "s":
        return 1, size, _Field(name, code, 1, b"")
    align = struct.calcsize("<" + kind)
    if count > 1:
        return align, size, _Field(name, code, count, (0,) * count)
    return align, size, _Field(name, code, 1, 0)


class Layout(Generic[R]):
    """An ordered list of (name, struct code) fields with the record type `unpack` returns.

    `record` must be a NamedTuple whose fields are the non-padding fields, in the same order:
    the constructor checks it, so a layout and its record cannot drift apart.
    """

    def __init__(
        self,
        name: str,
        record: type[R],
        fields: Iterable[tuple[str, str]],
        size: int | None = None,
        packed: bool = False,
    ) -> None:
        self.name = name
        self.record = record
        self.fields = tuple(fields)
        fmt = "<"
        offsets: dict[str, int] = {}
        parsed: list[_Field] = []
        offset = 0
        for field_name, code in self.fields:
            align, field_size, field = _parse(field_name, code)
            if packed:  # __attribute__((packed)): no padding between fields
                align = 1
            pad = (-offset) % align
            if pad:
                fmt += f"{pad}x"
                offset += pad
            offsets[field_name] = offset
            fmt += code
            offset += field_size
            parsed.append(field)
        if size is not None:
            if size < offset:
                raise ValueError(f"{name}: fields take {offset} bytes, more than {size}")
            fmt += f"{size - offset}x" if size > offset else ""
            offset = size
        self.struct = struct.Struct(fmt)
        self.offsets = offsets
        self.size = self.struct.size
        assert self.size == offset
        self._valued = tuple(f for f in parsed if f.count)
        names = tuple(f.name for f in self._valued)
        self._names = frozenset(names)
        record_fields = getattr(record, "_fields", None)
        if record_fields != names:
            raise TypeError(f"{name}: record {record.__name__} has {record_fields}, not {names}")
        # arrays unpack to several items: only then must unpack regroup them
        self._flat = all(f.count == 1 for f in self._valued)

    def pack(self, record: R | None = None, /, **values: object) -> bytes:
        """The bytes of `record`, or of the named values (fields not given are zero)."""
        if record is None:
            if not values.keys() <= self._names:
                unknown = ", ".join(sorted(values.keys() - self._names))
                raise TypeError(f"{self.name} has no field {unknown}")
            items: Iterable[object] = (values.get(f.name, f.default) for f in self._valued)
        else:
            items = record
        if self._flat:
            return self.struct.pack(*items)
        flat: list[object] = []
        for field, value in zip(self._valued, items):
            if field.count > 1:
                flat.extend(value)  # type: ignore[call-overload]
            else:
                flat.append(value)
        return self.struct.pack(*flat)

    def unpack(self, data: bytes | bytearray | memoryview, offset: int = 0) -> R:
        """The record at `offset` of `data` (which may be longer than the struct)."""
        values = self.struct.unpack_from(data, offset)
        if self._flat:
            return self.record._make(values)  # type: ignore[attr-defined,no-any-return]
        grouped: list[object] = []
        pos = 0
        for field in self._valued:
            if field.count > 1:
                grouped.append(values[pos : pos + field.count])
            else:
                grouped.append(values[pos])
            pos += field.count
        return self.record._make(grouped)  # type: ignore[attr-defined,no-any-return]
