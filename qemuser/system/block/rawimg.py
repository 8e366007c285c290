"""The raw format over a regular file or a host block device (a /dev/loopN)."""

from __future__ import annotations

import errno as errno_mod
import fcntl
import os
import stat
import struct

from qemuser.host.libc import host_syscall
from qemuser.host.sysnums import HOST_SYS_FALLOCATE
from qemuser.system.block.driver import BlockDriver, Extent
from qemuser.system.block.errors import BlockError

BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t): a block device's size in bytes
BLKDISCARD = 0x1277
# Python's os has posix_fallocate but no hole punching: fallocate(2) it is (host numbers)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
QCOW2_MAGIC = b"QFI\xfb"


def open_file(filename: str, read_only: bool) -> int:
    """Open an image's file, with QEMU's wording when that fails."""
    try:
        return os.open(filename, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    except OSError as e:
        raise BlockError(f"Could not open '{filename}': {os.strerror(e.errno)}", e.errno) from None


def host_length(fd: int) -> int:
    """A file's length, or a block device's real size (its st_size is 0)."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        return struct.unpack("=Q", buf)[0]
    return st.st_size


class RawImage(BlockDriver):
    """Guest bytes are the file's bytes. `probed`: the format was guessed, so block 0 is guarded."""

    format_name = "raw"

    def __init__(self, filename: str, read_only: bool = True, probed: bool = False) -> None:
        super().__init__(filename, read_only)
        self.fd = open_file(filename, read_only)
        self.is_device = stat.S_ISBLK(os.fstat(self.fd).st_mode)
        self.probed = probed
        # QEMU's block layer counts whole 512-byte sectors: a 3000-byte file is 3072 bytes long
        self._size = -(-host_length(self.fd) // 512) * 512

    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        self.check_request(offset, length)
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as e:
            raise BlockError(os.strerror(e.errno), e.errno) from None
        if len(data) < length:  # a file shorter than its size: the rest reads as zeroes
            data += bytes(length - len(data))
        return data

    def write(self, offset: int, data: bytes) -> None:
        self.check_writable()
        self.check_request(offset, len(data))
        if self.probed and offset < 512 and bytes(data[: 4 - offset]).startswith(QCOW2_MAGIC):
            # QEMU's guard for probed raw images: a guest must not turn its disk into a qcow2
            raise BlockError("Operation not permitted", errno_mod.EPERM)
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as e:
            raise BlockError(os.strerror(e.errno), e.errno) from None

    def _punch(self, offset: int, length: int) -> bool:
        try:
            if self.is_device:
                fcntl.ioctl(self.fd, BLKDISCARD, struct.pack("=QQ", offset, length))
            else:
                mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                host_syscall(HOST_SYS_FALLOCATE, self.fd, mode, offset, length)
        except OSError:
            return False
        return True

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        self.check_writable()
        self.check_request(offset, length)
        if not (unmap and not self.is_device and self._punch(offset, length)):
            chunk = 1 << 20
            done = 0
            while done < length:
                n = min(chunk, length - done)
                self.write(offset + done, bytes(n))
                done += n

    def discard(self, offset: int, length: int) -> None:
        self.check_writable()
        self.check_request(offset, length)
        if not self.is_device:
            self._punch(offset, length)

    def block_status(self, offset: int, length: int) -> list[Extent]:
        end = offset + length
        extents: list[Extent] = []
        pos = offset
        file_end = os.fstat(self.fd).st_size if not self.is_device else self._size
        while pos < end:
            if self.is_device:
                extents.append(Extent(pos, end - pos, True, False, True, pos))
                break
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA) if pos < file_end else end
            except OSError as e:
                if e.errno != errno_mod.ENXIO:
                    raise BlockError(os.strerror(e.errno), e.errno) from None
                data = end
            data = min(data, end)
            if data > pos:
                extents.append(Extent(pos, data - pos, True, True, False, pos))
                pos = data
                continue
            try:
                hole = os.lseek(self.fd, pos, os.SEEK_HOLE)
            except OSError:
                hole = end
            hole = min(max(hole, pos + 1), end)
            extents.append(Extent(pos, hole - pos, True, False, True, pos))
            pos = hole
        return extents

    def truncate(self, new_size: int, shrink: bool = False) -> None:
        self.check_writable()
        if self.is_device:
            raise BlockError(
                "Cannot grow device files"
                if new_size > self._size
                else "Cannot shrink device files",
                errno_mod.ENOTSUP,
            )
        try:
            os.ftruncate(self.fd, new_size)
        except OSError as e:
            raise BlockError(os.strerror(e.errno), e.errno) from None
        self._size = new_size

    def flush(self) -> None:
        if not self.read_only:
            os.fsync(self.fd)

    def file_length(self) -> int:
        return self._size

    def disk_usage(self) -> int:
        return os.fstat(self.fd).st_blocks * 512

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()
