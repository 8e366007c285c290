"""Opening an image by name: the format given, or probed as QEMU probes it."""

from __future__ import annotations

import os
import sys

from qemuser.system.block.driver import BlockDriver
from qemuser.system.block.errors import BlockError
from qemuser.system.block.qcow2 import MAGIC, Qcow2Image
from qemuser.system.block.rawimg import RawImage, open_file

FORMATS = ("raw", "qcow2")


def probe(filename: str) -> str:
    """'qcow2' when the file starts with the qcow2 magic, else 'raw' (QEMU's only fallback)."""
    fd = open_file(filename, True)
    try:
        head = os.pread(fd, 4, 0)
    finally:
        os.close(fd)
    return "qcow2" if head == MAGIC else "raw"


def raw_probe_warning(filename: str) -> str:
    return (
        f"WARNING: Image format was not specified for '{filename}' and probing guessed raw.\n"
        "         Automatically detecting the format is dangerous for raw images, write "
        "operations on block 0 will be restricted.\n"
        "         Specify the 'raw' format explicitly to remove the restrictions."
    )


def open_image(
    filename: str,
    fmt: str | None = None,
    read_only: bool = True,
    *,
    chain: frozenset[str] = frozenset(),
    warn: bool = True,
    open_backing: bool = True,
) -> BlockDriver:
    """Open `filename` as `fmt` (probed when None). Errors are BlockError, QEMU's words."""
    try:
        return _open(filename, fmt, read_only, chain, warn, open_backing)
    except OSError as e:  # a directory, an unreadable device...: QEMU's words, one line
        raise BlockError(
            f"Could not open '{filename}': {os.strerror(e.errno or 5)}", e.errno or 5
        ) from None


def _open(
    filename: str,
    fmt: str | None,
    read_only: bool,
    chain: frozenset[str],
    warn: bool,
    open_backing: bool,
) -> BlockDriver:
    if fmt is not None and fmt not in FORMATS:
        raise BlockError(f"Unknown driver '{fmt}'", errno=22)
    probed = fmt is None
    if fmt is None:
        fmt = probe(filename)
        if fmt == "raw" and warn and not read_only:
            print(raw_probe_warning(filename), file=sys.stderr)
    if fmt == "qcow2":
        return Qcow2Image(
            filename, read_only, open_backing=open_backing, chain=chain, opener=open_image
        )
    return RawImage(filename, read_only, probed=probed)
