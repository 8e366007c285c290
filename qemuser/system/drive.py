"""Block backends as -drive and -blockdev open them: an image (raw, or qcow2 through the block
layer's driver), read and written by byte offset, and the `Drive` that names one for a device to
claim."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from qemuser.system.block.driver import BlockDriver

SECTOR = 512


class BlockBackend:
    """A raw disk image: reads, writes and flushes by byte offset.

    With `snapshot` (QEMU's -snapshot / snapshot=on) the image is only read: writes land in
    an in-memory overlay of whole sectors, gone when the emulator exits.
    """

    def __init__(
        self,
        path: str,
        read_only: bool = False,
        snapshot: bool = False,
        driver: BlockDriver | None = None,
    ) -> None:
        self.path = path
        self.read_only = read_only
        self.overlay: dict[int, bytes] | None = {} if snapshot else None
        # A format driver (qcow2) does the I/O when given; else the file is raw.
        self.driver = driver
        self.format = (
            "raw" if driver is None else type(driver).__name__.lower().removesuffix("image")
        )
        if driver is not None:
            self.host_fd = -1
            self.size = driver.size()
            return
        # OSError propagates: the command line reports "Could not open ..." as QEMU does.
        writable = not read_only and not snapshot
        self.host_fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        info = os.fstat(self.host_fd)
        # A block device (/dev/loopN) has st_size 0: its size is where its end is, as the
        # BLKGETSIZE64 ioctl QEMU uses reports it.
        self.size = (
            os.lseek(self.host_fd, 0, os.SEEK_END) if stat.S_ISBLK(info.st_mode) else info.st_size
        )

    def _pread(self, offset: int, length: int) -> bytes:
        if self.driver is not None:
            length = max(0, min(length, self.size - offset))
            return self.driver.read(offset, length) if length else b""
        return os.pread(self.host_fd, length, offset)

    def read(self, offset: int, length: int) -> bytes:
        data = bytearray(self._pread(offset, length).ljust(length, b"\0"))
        if self.overlay:
            first, end = offset // SECTOR, -(-(offset + length) // SECTOR)
            for sector in range(first, end):
                if (saved := self.overlay.get(sector)) is not None:
                    start = sector * SECTOR - offset
                    lo, hi = max(start, 0), min(start + SECTOR, length)
                    data[lo:hi] = saved[lo - start : hi - start]
        return bytes(data)

    def write(self, offset: int, data: bytes) -> None:
        if self.overlay is None:
            if self.driver is not None:
                self.driver.write(offset, data)
            else:
                os.pwrite(self.host_fd, data, offset)
            return
        # Whole sectors in the overlay: merge a partial one with what reads would return.
        first, end = offset // SECTOR, -(-(offset + len(data)) // SECTOR)
        merged = bytearray(self.read(first * SECTOR, (end - first) * SECTOR))
        merged[offset - first * SECTOR : offset - first * SECTOR + len(data)] = data
        for n, sector in enumerate(range(first, end)):
            self.overlay[sector] = bytes(merged[n * SECTOR : (n + 1) * SECTOR])

    def commit(self) -> None:
        """-snapshot's writes into the image (QEMU's C-a s, `commit`); then none are pending."""
        if not self.overlay or self.read_only:
            return
        if self.driver is not None:
            for sector, data in sorted(self.overlay.items()):
                self.driver.write(sector * SECTOR, data)
            self.driver.flush()
        else:
            fd = os.open(self.path, os.O_RDWR)
            try:
                for sector, data in sorted(self.overlay.items()):
                    os.pwrite(fd, data, sector * SECTOR)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.overlay.clear()

    def flush(self) -> None:
        if self.overlay is None:
            if self.driver is not None:
                self.driver.flush()
            else:
                os.fsync(self.host_fd)

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()
        else:
            os.close(self.host_fd)


@dataclass
class Drive:
    """A block backend from -drive or -blockdev, and whether a device took it."""

    name: str  # the -drive id= or -blockdev node-name=
    backend: BlockBackend | None
    option: str  # the option as given, for messages
    interface: str = "none"  # -drive if=; "none" for -blockdev
    used: bool = False
