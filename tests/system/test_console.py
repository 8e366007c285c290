"""The host side of the serial console: stdin bytes and QEMU's Ctrl-A escapes (no unicorn)."""

from __future__ import annotations

import os

from qemuser.system.console import MUX_HELP, TERMINATED, ConsoleInput


def console(mux: bool) -> tuple[ConsoleInput, int, bytearray]:
    read_end, write_end = os.pipe()
    replies = bytearray()
    return ConsoleInput(read_end, mux=mux, reply=replies.extend), write_end, replies


def test_plain_stdio_passes_every_byte() -> None:
    con, pipe, replies = console(mux=False)
    assert con.read() == b""  # nothing typed yet: does not block
    os.write(pipe, b"ls\x01x\n")
    assert con.read() == b"ls\x01x\n"
    assert not con.quit and replies == b""


def test_mux_escapes() -> None:
    con, pipe, replies = console(mux=True)
    os.write(pipe, b"a\x01\x01b\x01h")
    assert con.read() == b"a\x01b"  # C-a C-a sends one C-a
    assert replies == MUX_HELP
    os.write(pipe, b"c\x01")  # an escape split across reads
    assert con.read() == b"c"
    os.write(pipe, b"xignored")
    assert con.read() == b""
    assert con.quit and replies == MUX_HELP + TERMINATED


def test_end_of_input_stops_polling() -> None:
    con, pipe, _ = console(mux=True)
    os.close(pipe)
    assert con.read() == b""
    assert con.fd is None and con.read() == b""
