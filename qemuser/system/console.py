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
from typing import Protocol

ESCAPE = 0x01  # Ctrl-A, QEMU's mux escape character (-echr default)

# QEMU's text for C-a h, byte for byte (chardev/char-mux.c: "\n\r" line ends).
MUX_HELP = (
    b"\n\rC-a h    print this help\n\r"
    b"C-a x    exit emulator\n\r"
    b"C-a s    save disk data back to file (if -snapshot)\n\r"
    b"C-a t    toggle console timestamps\n\r"
    b"C-a b    send break (magic sysrq)\n\r"
    b"C-a c    switch between console and monitor\n\r"
    b"C-a C-a  sends C-a\n\r"
)
TERMINATED = b"QEMU: Terminated\n\r"  # QEMU's own words on C-a x (chardev/char-mux.c)


class Monitor(Protocol):
    """An HMP session sharing the console (monitor/server.py's HmpSession)."""

    def start(self) -> None: ...

    def feed(self, data: bytes) -> None: ...

    def show_prompt(self) -> None: ...


class ConsoleInput:
    """Bytes typed on a host file descriptor, for the guest's serial port.

    With `mux` (QEMU's `mon:stdio`, the -nographic default) Ctrl-A starts an escape: `x` ends
    the emulator, `h` prints the escapes, a second Ctrl-A sends one to the guest.
    """

    def __init__(
        self,
        fd: int,
        mux: bool,
        reply: Callable[[bytes], None],
        monitor: Monitor | None = None,
        send_break: Callable[[], None] | None = None,
        commit: Callable[[], None] | None = None,
        wait_fds: Callable[[], list[int]] | None = None,
        read: Callable[[], bytes] | None = None,
    ) -> None:
        self.fd: int | None = fd
        self.mux = mux
        self.reply = reply  # where escape help and messages go (the console output)
        self.quit = False
        self._escaped = False
        # C-a c gives the console to the monitor and back; its banner comes at first focus.
        self.monitor = monitor
        self.monitor_focus = False
        self._monitor_started = False
        self.send_break = send_break
        self.commit = commit  # C-a s: -snapshot's writes into the images
        self.timestamps = False  # C-a t: QEMU stamps output lines; recorded, not applied
        # A chardev other than a plain fd: its own readiness and reads.
        self._wait_fds = wait_fds
        self._read = read

    def wait_fds(self) -> list[int]:
        """The descriptors whose readiness means input (for the machine's idle wait)."""
        if self._wait_fds is not None:
            return self._wait_fds()
        return [] if self.fd is None or self.fd < 0 else [self.fd]

    def wait(self, timeout_ns: int) -> None:
        """Sleep up to `timeout_ns`, waking early when input arrives."""
        select.select(self.wait_fds(), [], [], timeout_ns / 1e9)

    def read(self) -> bytes:
        """Whatever is ready now (never blocks); b"" when nothing is. Sets `quit` on C-a x."""
        if self._read is not None:
            data = self._read()
            if not data:
                return b""
        else:
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

    def _to_monitor(self, data: bytes) -> None:
        if data and self.monitor is not None:
            self.monitor.feed(data)

    def _switch(self) -> None:
        """C-a c: console <-> monitor (QEMU's banner at the first switch, a prompt after)."""
        if self.monitor is None:
            return
        self.monitor_focus = not self.monitor_focus
        if not self.monitor_focus:
            return
        if not self._monitor_started:
            self._monitor_started = True
            self.monitor.start()
        else:
            self.monitor.show_prompt()

    def _unescape(self, data: bytes) -> bytes:
        """Bytes for the guest; the monitor's share (while it has the focus) goes to it."""
        out = bytearray()
        monitor = bytearray()
        for byte in data:
            sink = monitor if self.monitor_focus else out
            if not self._escaped:
                if byte == ESCAPE:
                    self._escaped = True
                else:
                    sink.append(byte)
                continue
            self._escaped = False
            if byte == ESCAPE:
                sink.append(byte)
            elif byte in b"xX":
                self.reply(TERMINATED)
                self.quit = True
                break
            elif byte in b"hH?":
                self.reply(MUX_HELP)
            elif byte in b"cC":
                self._to_monitor(bytes(monitor))
                monitor.clear()
                self._switch()
            elif byte in b"bB":
                if self.send_break is not None:
                    self.send_break()
            elif byte in b"tT":
                self.timestamps = not self.timestamps
            elif byte in b"sS":
                if self.commit is not None:
                    self.commit()
        self._to_monitor(bytes(monitor))
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
