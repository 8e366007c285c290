"""The one exception type of the block layer: its message is one line, in QEMU's words."""

from __future__ import annotations


class BlockError(Exception):
    """A block-layer failure (bad image, bad request, I/O error) with a one-line message.

    `errno` is set when the failure maps to one (NBD and qemu-io report it), else EIO.
    """

    def __init__(self, message: str, errno: int = 5) -> None:
        super().__init__(message)
        self.errno = errno
