"""The host side of the serial console: stdin read without blocking, QEMU's Ctrl-A escapes, and
the terminal's raw mode.

The machine polls `ConsoleInput` between slices and while the guest idles in WFI, and hands
what was typed to the board's console device (`feed_input`), which raises its own interrupt.
"""

from __future__ import annotations

import contextlib
import os
import select
import termios
from collections.abc import Callable, Iterator

ESCAPE = 0x01  # Ctrl-A, QEMU's mux escape character (-echr default)

MUX_HELP = b"\r\nC-a h    print this help\r\nC-a x    exit emulator\r\nC-a C-a  sends C-a\r\n"
TERMINATED = b"QEMU: Terminated\n\r"  # QEMU's own words on C-a x (chardev/char-mux.c)


class ConsoleInput:
    """Bytes typed on a host file descriptor, for the guest's serial port.

    With `mux` (QEMU's `mon:stdio`, the -nographic default) Ctrl-A starts an escape: `x` ends
    the emulator, `h` prints the escapes, a second Ctrl-A sends one to the guest.
    """

    def __init__(self, fd: int, mux: bool, reply: Callable[[bytes], None]) -> None:
        self.fd: int | None = fd
        self.mux = mux
        self.reply = reply  # where escape help and messages go (the console output)
        self.quit = False
        self._escaped = False

    def wait(self, timeout_ns: int) -> None:
        """Sleep up to `timeout_ns`, waking early when input arrives."""
        if self.fd is None:
            select.select([], [], [], timeout_ns / 1e9)
            return
        select.select([self.fd], [], [], timeout_ns / 1e9)

    def read(self) -> bytes:
        """Whatever is ready now (never blocks); b"" when nothing is. Sets `quit` on C-a x."""
        if self.fd is None or not select.select([self.fd], [], [], 0)[0]:
            return b""
        try:
            data = os.read(self.fd, 4096)
        except OSError:
            data = b""
        if not data:  # end of input: the guest simply gets no more bytes
            self.fd = None
            return b""
        return self._unescape(data) if self.mux else data

    def _unescape(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if not self._escaped:
                if byte == ESCAPE:
                    self._escaped = True
                else:
                    out.append(byte)
                continue
            self._escaped = False
            if byte == ESCAPE:
                out.append(byte)
            elif byte in b"xX":
                self.reply(TERMINATED)
                self.quit = True
                break
            elif byte in b"hH?":
                self.reply(MUX_HELP)
        return bytes(out)


@contextlib.contextmanager
def terminal_mode(fd: int, keep_signals: bool) -> Iterator[None]:
    """Raw input on a terminal for the run, as QEMU's stdio backend sets it; restored after.

    Output post-processing stays on; Ctrl-C still interrupts the emulator only when
    `keep_signals` (QEMU's `-serial stdio`; with `mon:stdio` it goes to the guest).
    Does nothing when `fd` is not a terminal (a pipe, a file, /dev/null).
    """
    try:
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError):
        yield
        return
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = saved
    iflag &= ~(
        termios.IGNBRK
        | termios.BRKINT
        | termios.PARMRK
        | termios.ISTRIP
        | termios.INLCR
        | termios.IGNCR
        | termios.ICRNL
        | termios.IXON
    )
    oflag |= termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN)
    if not keep_signals:
        lflag &= ~termios.ISIG
    cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    cc = list(cc)
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, ispeed, ospeed, cc])
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
