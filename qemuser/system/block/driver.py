"""The interface every image format implements, and the extents block status returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from qemuser.system.block.errors import BlockError


@dataclass(frozen=True)
class Extent:
    """A run of guest bytes with one allocation state, as this layer alone sees it.

    allocated: this layer defines the contents (else they come from the backing file, or read as
    zeroes when there is none). zero: the contents read as zeroes. data: there is data in the
    file (possibly zeroes). host_offset: where the bytes are in this layer's file, when they are
    stored there contiguously (not for compressed clusters).
    """

    start: int
    length: int
    allocated: bool
    zero: bool
    data: bool
    host_offset: int | None = None
    compressed: bool = False


class BlockDriver(ABC):
    """An open image: guest-visible bytes, read and written by offset."""

    format_name: str = ""

    def __init__(self, filename: str, read_only: bool) -> None:
        self.filename = filename
        self.read_only = read_only
        self.backing: BlockDriver | None = None

    @abstractmethod
    def size(self) -> int:
        """The virtual size in bytes."""

    @abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """`length` guest bytes at `offset` (the request must lie inside the image)."""

    @abstractmethod
    def write(self, offset: int, data: bytes) -> None:
        """Store `data` at guest `offset`."""

    @abstractmethod
    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        """Make the range read as zeroes; `unmap` allows freeing its storage."""

    @abstractmethod
    def discard(self, offset: int, length: int) -> None:
        """Tell the image the range is no longer needed (its contents become unspecified)."""

    @abstractmethod
    def block_status(self, offset: int, length: int) -> list[Extent]:
        """The allocation map of [offset, offset+length) in this layer, in order, covering it."""

    @abstractmethod
    def truncate(self, new_size: int, shrink: bool = False) -> None:
        """Change the virtual size."""

    def flush(self) -> None:  # noqa: B027 (optional: formats without a cache need nothing)
        """Make written data durable."""

    def close(self) -> None:
        """Release the file (and the backing chain)."""
        if self.backing is not None:
            self.backing.close()
            self.backing = None

    def file_length(self) -> int:
        """Bytes the image's file takes (its end offset)."""
        return 0

    def disk_usage(self) -> int:
        """Bytes the file really takes on the host's disk (stat's blocks)."""
        return 0

    def info_specific(self) -> dict[str, object] | None:
        """Format-specific information for `qemu-img info` (JSON names), if any."""
        return None

    def cluster_size(self) -> int | None:
        return None

    def check_request(self, offset: int, length: int) -> None:
        """Refuse a request outside the image, as QEMU's generic layer does."""
        if offset < 0 or length < 0 or offset + length > self.size():
            raise BlockError("Input/output error", errno=5)

    def check_writable(self) -> None:
        if self.read_only:
            raise BlockError("Permission denied", errno=1)

    def __enter__(self) -> BlockDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
