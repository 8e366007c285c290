"""virtio-blk (virtio 1.1 section 5.2) over a raw image."""

from __future__ import annotations

import struct

from qemuser.system.devices.registry import PlugContext, Property, pluggable
from qemuser.system.drive import SECTOR, BlockBackend
from qemuser.system.virtio.transport import Chain, DmaError, DmaHost, VirtioDevice

# struct virtio_blk_outhdr (include/uapi/linux/virtio_blk.h): le32 type, le32 ioprio, le64 sector
BLK_REQ_HEADER = struct.Struct("<IIQ")
BLK_T_IN, BLK_T_OUT, BLK_T_FLUSH, BLK_T_GET_ID = 0, 1, 4, 8
BLK_S_OK, BLK_S_IOERR, BLK_S_UNSUPP = 0, 1, 2
BLK_F_SEG_MAX, BLK_F_RO, BLK_F_BLK_SIZE, BLK_F_FLUSH = 1 << 2, 1 << 5, 1 << 6, 1 << 9
BLK_ID_BYTES = 20  # VIRTIO_BLK_ID_BYTES


@pluggable
class VirtioBlk(VirtioDevice):
    """virtio-blk over a raw image: read, write, flush and get-id on one request queue."""

    model = "virtio-blk-device"
    category = "Storage"
    description = "Virtio block device"
    properties = (
        Property("drive", "str", "Node name or ID of a block device to use as a backend"),
        Property("serial", "str", "disk serial number reported by VIRTIO_BLK_T_GET_ID"),
    )
    device_id = 2
    num_queues = 1
    seg_max = 254  # QEMU's default: its queue-size 256 minus the header and status descriptors

    def __init__(self, backend: BlockBackend, serial: str = "") -> None:
        super().__init__()
        self.backend = backend
        self.serial = serial

    @classmethod
    def from_options(cls, opts: dict[str, str], plan: PlugContext, option: str) -> VirtioBlk:
        drive = plan.claim_drive(opts.get("drive"), option)
        assert drive.backend is not None  # claim_drive refuses an empty drive
        return cls(drive.backend, serial=opts.get("serial", ""))

    def features(self) -> int:
        ro = BLK_F_RO if self.backend.read_only else 0
        return BLK_F_SEG_MAX | BLK_F_BLK_SIZE | BLK_F_FLUSH | ro

    def config(self) -> bytes:
        # struct virtio_blk_config: le64 capacity (512-byte sectors), le32 size_max,
        # le32 seg_max, geometry (le16 cylinders, u8 heads, u8 sectors), le32 blk_size.
        return struct.pack(
            "<QIIHBBI", self.backend.size // SECTOR, 0, self.seg_max, 0, 0, 0, SECTOR
        )

    def notify(self, queue_index: int) -> None:
        transport = self.transport
        assert transport is not None
        served = False
        while (chain := transport.pop(queue_index)) is not None:
            written = self._request(transport.host, chain)
            transport.push(queue_index, chain, written)
            served = True
        if served:
            transport.interrupt()

    def _request(self, host: DmaHost, chain: Chain) -> int:
        """Serve one request; returns the bytes written into the chain (data + status)."""
        readable = chain.read(host)
        room = chain.writable_length()
        if len(readable) < BLK_REQ_HEADER.size or room < 1:
            raise DmaError("virtio-blk request without header or status byte")
        kind, _ioprio, sector = BLK_REQ_HEADER.unpack_from(readable)
        payload = readable[BLK_REQ_HEADER.size :]
        data = b""
        status = BLK_S_OK
        offset = sector * SECTOR
        capacity = self.backend.size // SECTOR * SECTOR
        try:
            if kind == BLK_T_IN:
                length = room - 1
                if length % SECTOR or offset + length > capacity:
                    status = BLK_S_IOERR
                else:
                    data = self.backend.read(offset, length)
            elif kind == BLK_T_OUT:
                if (
                    self.backend.read_only
                    or len(payload) % SECTOR
                    or (offset + len(payload) > capacity)
                ):
                    status = BLK_S_IOERR
                else:
                    self.backend.write(offset, payload)
            elif kind == BLK_T_FLUSH:
                self.backend.flush()
            elif kind == BLK_T_GET_ID:
                data = self.serial.encode()[:BLK_ID_BYTES].ljust(min(room - 1, BLK_ID_BYTES), b"\0")
            else:
                status = BLK_S_UNSUPP
        except OSError:
            status, data = BLK_S_IOERR, b""
        chain.write(host, 0, data)
        chain.write(host, room - 1, bytes([status]))
        return len(data) + 1
