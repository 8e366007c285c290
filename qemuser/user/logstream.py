"""Where qemuser's own messages go (-strace, -d, -D, "uncaught target signal"): a stream that
never stops the guest.

qemu-user ignores its log's write errors, so a full disk (`-D /dev/full`) or a reader that went
away costs the log, not the program. And the guest's fds 0-2 are the guest's business: started
with stderr closed, qemuser says nothing at all (Python leaves `sys.stderr` None then); it must
not write to fd 2 either, since the guest's first open() takes that number, as on Linux.
Writes go straight to the fd, unbuffered: every writer flushes each line or block anyway, and a
failed write must not stay in a buffer to fail again.
"""

from __future__ import annotations

import fcntl as host_fcntl
import io
import os
import sys


class LogStream(io.TextIOBase):
    """A text stream onto host fd `fd` (None: nowhere) that drops what cannot be written."""

    def __init__(self, fd: int | None, *, owned: bool = False) -> None:
        super().__init__()
        self.fd = fd
        self.owned = owned  # a -D file of ours, which the guest must not close or reuse

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.fd is not None:
            data = text.encode(errors="replace")
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError:
                pass  # the message is lost, the guest runs on (as in qemu)
        return len(text)

    def fileno(self) -> int:
        if self.fd is None:
            raise io.UnsupportedOperation("fileno")
        return self.fd


def stderr_log() -> LogStream:
    """qemuser's stderr, or nowhere when this process started with fd 2 closed."""
    if sys.stderr is None:
        return LogStream(None)
    try:
        sys.stderr.flush()  # what Python printed goes first
    except (OSError, ValueError):
        pass
    return LogStream(2)


def file_log(path: str) -> LogStream:
    """The -D file, emptied as qemu does; kept off the guest's fds 0-2 (the guest's first
    open() takes the lowest free number, as on Linux, even when it closed its stdio)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    if fd < 3:
        high = host_fcntl.fcntl(fd, host_fcntl.F_DUPFD_CLOEXEC, 3)
        os.close(fd)
        fd = high
    return LogStream(fd, owned=True)


def flush_stdout() -> None:
    """Flush Python's stdout if there is one (None when this process started with fd 1 closed)."""
    if sys.stdout is not None:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
