"""QEMU's size syntax and its two ways of printing sizes."""

from __future__ import annotations

import math

from qemuser.system.block.errors import BlockError

SUFFIXES = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def parse_size(text: str, default_shift: int = 0) -> int:
    """'64M', '1.5G', '4096', '512b' (qemu_strtosz: binary suffixes, fractions allowed)."""
    t = text.strip()
    if not t:
        raise BlockError("Invalid size", errno=22)
    shift = default_shift
    if t[-1].lower() in SUFFIXES:
        shift = SUFFIXES[t[-1].lower()]
        t = t[:-1]
    try:
        value = float(t) if "." in t else int(t, 0 if t.startswith("0x") else 10)
    except ValueError:
        raise BlockError("Invalid size", errno=22) from None
    if value < 0:
        raise BlockError("Invalid size", errno=22)
    result = int(value * (1 << shift))
    if result >= 2**63:
        raise BlockError("Invalid size", errno=34)
    return result


def size_to_str(value: int) -> str:
    """qemu-img info's '64 MiB', '196 KiB', '1.5 GiB' (util/cutils.c size_to_str)."""
    suffixes = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
    _, exp = math.frexp(value / (1000.0 / 1024.0))
    i = int((exp - 1) / 10)  # C's division truncates toward zero (value 0 gives i = 0)
    i = max(0, min(i, len(suffixes) - 1))
    return f"{value / (1 << (i * 10)):0.3g} {suffixes[i]}B"


def cvtstr(value: float) -> str:
    """qemu-io's '128 KiB', '63.875 MiB', '512 bytes' (qemu-io-cmds.c cvtstr)."""
    units = ((60, " EiB"), (50, " PiB"), (40, " TiB"), (30, " GiB"), (20, " MiB"), (10, " KiB"))
    suffix = " bytes"
    for shift, name in units:
        if value >= (1 << shift):
            value /= 1 << shift
            suffix = name
            break
    text = f"{value:f}"
    if ".000" in text:
        return text[: text.index(".000")] + suffix
    return f"{value:.3f}{suffix}"
