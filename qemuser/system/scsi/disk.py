"""SCSI disks and CD-ROMs (`-device scsi-hd` / `scsi-cd`): the commands Linux, U-Boot and EDK2
send, answered from a block backend (SPC-4 / SBC-3 / MMC-6, with QEMU's scsi-disk as the model of
what a guest expects: its INQUIRY strings, VPD pages and mode pages).

A transport (virtio-scsi) hands `execute` one CDB with the data the guest wrote, and gets back
the status, the data for the guest, and sense data when the status is CHECK CONDITION.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

GOOD = 0x00
CHECK_CONDITION = 0x02

# Sense keys and (ASC, ASCQ) pairs (SPC-4 annex D)
NO_SENSE, NOT_READY, MEDIUM_ERROR, ILLEGAL_REQUEST, UNIT_ATTENTION, DATA_PROTECT = (
    0x0,
    0x2,
    0x3,
    0x5,
    0x6,
    0x7,
)
INVALID_OPCODE = (0x20, 0x00)
LBA_OUT_OF_RANGE = (0x21, 0x00)
INVALID_FIELD_IN_CDB = (0x24, 0x00)
INVALID_FIELD_IN_PARAMETERS = (0x26, 0x00)
WRITE_PROTECTED = (0x27, 0x00)
MEDIUM_NOT_PRESENT = (0x3A, 0x00)
INCOMPATIBLE_MEDIUM = (0x30, 0x00)
POWER_ON_RESET = (0x29, 0x00)
SAVING_NOT_SUPPORTED = (0x39, 0x00)
READ_ERROR = (0x11, 0x00)

MAX_TRANSFER_BLOCKS = 65536  # per command, in logical blocks (32 MiB of 512-byte blocks)
TYPE_DISK = 0x00
TYPE_ROM = 0x05


class BlockBackend(Protocol):
    """What a SCSI disk needs of its drive (the block layer's drivers provide it)."""

    @property
    def size(self) -> int: ...
    @property
    def read_only(self) -> bool: ...
    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def flush(self) -> None: ...


class ScsiCheck(Exception):
    """A command that ends in CHECK CONDITION with this sense."""

    def __init__(self, key: int, asc_ascq: tuple[int, int]) -> None:
        super().__init__(f"sense {key:x}/{asc_ascq[0]:02x}/{asc_ascq[1]:02x}")
        self.key = key
        self.asc, self.ascq = asc_ascq


@dataclass(frozen=True)
class ScsiResult:
    status: int
    data: bytes = b""
    sense: bytes = b""


def fixed_sense(key: int, asc: int, ascq: int) -> bytes:
    """Fixed-format sense data (SPC-4 4.5.3), 18 bytes."""
    return bytes((0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0))


@dataclass
class ScsiDisk:
    """One logical unit. `removable` + TYPE_ROM for scsi-cd (2048-byte blocks)."""

    backend: BlockBackend | None
    serial: str = ""
    device_type: int = TYPE_DISK
    block_size: int = 512
    vendor: str = "QEMU"
    product: str = "QEMU HARDDISK"
    revision: str = "2.5+"
    wwn: int = 0
    _unit_attention: bool = field(default=True, repr=False)
    _last_sense: bytes = field(default=b"", repr=False)

    @property
    def removable(self) -> bool:
        return self.device_type == TYPE_ROM

    @property
    def blocks(self) -> int:
        return 0 if self.backend is None else self.backend.size // self.block_size

    def execute(self, cdb: bytes, data_out: bytes = b"") -> ScsiResult:
        """Runs one command; never raises for anything the guest sent."""
        try:
            if not cdb:
                raise ScsiCheck(ILLEGAL_REQUEST, INVALID_OPCODE)
            opcode = cdb[0]
            handler = _COMMANDS.get(opcode)
            if handler is None:
                raise ScsiCheck(ILLEGAL_REQUEST, INVALID_OPCODE)
            # After a reset the first command (other than INQUIRY, REPORT LUNS and REQUEST
            # SENSE) reports the reset once, as a real disk and QEMU do.
            if self._unit_attention and opcode not in (0x12, 0xA0, 0x03):
                self._unit_attention = False
                raise ScsiCheck(UNIT_ATTENTION, POWER_ON_RESET)
            data = handler(self, cdb, data_out)
        except ScsiCheck as check:
            sense = fixed_sense(check.key, check.asc, check.ascq)
            self._last_sense = sense
            return ScsiResult(CHECK_CONDITION, b"", sense)
        except (OSError, ValueError):
            sense = fixed_sense(MEDIUM_ERROR, *READ_ERROR)
            self._last_sense = sense
            return ScsiResult(CHECK_CONDITION, b"", sense)
        return ScsiResult(GOOD, data)

    def reset(self) -> None:
        self._unit_attention = True

    # --- helpers ---
    def _need_medium(self) -> BlockBackend:
        if self.backend is None:
            raise ScsiCheck(NOT_READY, MEDIUM_NOT_PRESENT)
        return self.backend

    def _check_range(self, lba: int, count: int) -> None:
        if lba + count > self.blocks or lba < 0:
            raise ScsiCheck(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)


def _alloc(data: bytes, length: int) -> bytes:
    """Data-in is cut to the CDB's allocation length."""
    return data[:length]


def _test_unit_ready(disk: ScsiDisk, _cdb: bytes, _data: bytes) -> bytes:
    disk._need_medium()
    return b""


def _request_sense(disk: ScsiDisk, cdb: bytes, _data: bytes) -> bytes:
    sense = disk._last_sense or fixed_sense(NO_SENSE, 0, 0)
    disk._last_sense = b""
    return _alloc(sense, cdb[4])


def _inquiry(disk: ScsiDisk, cdb: bytes, _data: bytes) -> bytes:
    evpd, page, length = cdb[1] & 1, cdb[2], struct.unpack_from(">H", cdb, 3)[0]
    if not evpd:
        if page:
            raise ScsiCheck(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
        data = bytearray(36)
        data[0] = disk.device_type
        data[1] = 0x80 if disk.removable else 0
        data[2] = 5  # SPC-3
        data[3] = 0x12  # HiSup, response data format 2
        data[4] = len(data) - 5
        data[7] = 0x12 if disk.device_type == TYPE_DISK else 0x10  # WBus16 | CmdQue; Sync
        data[8:16] = disk.vendor.ljust(8)[:8].encode()
        data[16:32] = disk.product.ljust(16)[:16].encode()
        data[32:36] = disk.revision.ljust(4)[:4].encode()
        return _alloc(bytes(data), length)
    pages: dict[int, bytes] = {0x00: b"", 0x83: _device_identification(disk)}
    if disk.serial:
        pages[0x80] = disk.serial.encode()
    if disk.device_type == TYPE_DISK:
        # Block limits (SBC-3 6.6.4): optimal granularity 1 block, at most MAX_TRANSFER blocks
        # per command, UNMAP and WRITE SAME not offered (all their limits 0).
        limits = struct.pack(">BBHII", 0, 0, 1, MAX_TRANSFER_BLOCKS, 0)
        pages[0xB0] = limits.ljust(60, b"\0")
        pages[0xB1] = struct.pack(">H", 1).ljust(60, b"\0")  # rotation rate 1: non-rotating
        pages[0xB2] = bytes(4)  # logical block provisioning: none
    pages[0x00] = bytes(sorted(pages))
    if page not in pages:
        raise ScsiCheck(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
    body = pages[page]
    header = bytes((disk.device_type, page)) + struct.pack(">H", len(body))
    return _alloc(header + body, length)


def _device_identification(disk: ScsiDisk) -> bytes:
    """VPD 0x83: a vendor-specific designator from the serial (or the product), and an NAA
    identifier when the device has a wwn."""
    name = (disk.serial or disk.product).encode()[:255]
    out = bytes((0x02, 0x00, 0x00, len(name))) + name  # ASCII, vendor specific, LUN
    if disk.wwn:
        out += bytes((0x01, 0x03, 0x00, 8)) + struct.pack(">Q", disk.wwn)
    return out


def _read_capacity_10(disk: ScsiDisk, _cdb: bytes, _data: bytes) -> bytes:
    disk._need_medium()
    last = disk.blocks - 1
    return struct.pack(">II", min(last, 0xFFFF_FFFF), disk.block_size)


def _service_action_in_16(disk: ScsiDisk, cdb: bytes, _data: bytes) -> bytes:
    if cdb[1] & 0x1F != 0x10:  # READ CAPACITY(16)
        raise ScsiCheck(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
    disk._need_medium()
    length = struct.unpack_from(">I", cdb, 10)[0]
    data = struct.pack(">QI", disk.blocks - 1, disk.block_size).ljust(32, b"\0")
    return _alloc(data, length)


def _rw_params(cdb: bytes) -> tuple[int, int, bool]:
    """(lba, blocks, is_write) of READ/WRITE 6/10/12/16."""
    opcode = cdb[0]
    if opcode in (0x08, 0x0A):
        lba = ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]
        count = cdb[4] or 256
    elif opcode in (0x28, 0x2A, 0x2E, 0x2F):
        lba, count = struct.unpack_from(">I", cdb, 2)[0], struct.unpack_from(">H", cdb, 7)[0]
    elif opcode in (0xA8, 0xAA):
        lba, count = struct.unpack_from(">II", cdb, 2)
    else:
        lba, count = struct.unpack_from(">QI", cdb, 2)
    return lba, count, opcode in (0x0A, 0x2A, 0xAA, 0x8A, 0x2E)


def _read(disk: ScsiDisk, cdb: bytes, _data: bytes) -> bytes:
    backend = disk._need_medium()
    lba, count, _ = _rw_params(cdb)
    disk._check_range(lba, count)
    data = backend.read(lba * disk.block_size, count * disk.block_size)
    return data.ljust(count * disk.block_size, b"\0")


def _write(disk: ScsiDisk, cdb: bytes, data: bytes) -> bytes:
    backend = disk._need_medium()
    lba, count, _ = _rw_params(cdb)
    if backend.read_only or disk.device_type == TYPE_ROM:
        raise ScsiCheck(DATA_PROTECT, WRITE_PROTECTED)
    disk._check_range(lba, count)
    if len(data) < count * disk.block_size:
        raise ScsiCheck(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
    backend.write(lba * disk.block_size, data[: count * disk.block_size])
    if cdb[0] != 0x0A and cdb[1] & 0x08:  # FUA: forced unit access
        backend.flush()
    return b""


def _verify(disk: ScsiDisk, cdb: bytes, _data: bytes) -> bytes:
    disk._need_medium()
    lba, count, _ = _rw_params(cdb)
    disk._check_range(lba, count)
    return b""


def _synchronize_cache(disk: ScsiDisk, _cdb: bytes, _data: bytes) -> bytes:
    disk._need_medium().flush()
    return b""


def _mode_pages(disk: ScsiDisk, page: int, control: int) -> bytes:
    """Mode pages 0x08 (caching: write cache on) and 0x0a (control), as QEMU reports them;
    control 1 asks for the changeable mask (nothing is)."""
    changeable = control == 1
    caching = bytes((0x08, 0x12, 0 if changeable else 0x04)) + bytes(17)  # WCE
    ctrl = bytes((0x0A, 0x0A)) + bytes(10)
    found = {0x08: caching, 0x0A: ctrl} if disk.device_type == TYPE_DISK else {0x0A: ctrl}
    if page == 0x3F:
        return b"".join(found[p] for p in sorted(found))
    if page not in found:
        raise ScsiCheck(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
    return found[page]


def _mode_sense(disk: ScsiDisk, cdb: bytes, _data: bytes) -> bytes:
    six = cdb[0] == 0x1A
    dbd = cdb[1] & 0x08
    page, control = cdb[2] & 0x3F, cdb[2] >> 6
    if control == 3:
        raise ScsiCheck(ILLEGAL_REQUEST, SAVING_NOT_SUPPORTED)
    pages = _mode_pages(disk, page, control)
    write_protect = 0x80 if disk.backend is not None and disk.backend.read_only else 0
    descriptor = b""
    if not dbd and disk.device_type == TYPE_DISK and disk.backend is not None:
        descriptor = struct.pack(">I", min(disk.blocks, 0xFFFFFF)) + struct.pack(
            ">I", disk.block_size
        )
        descriptor = bytes((0,)) + descriptor[1:4] + bytes((0,)) + descriptor[5:8]
    if six:
        header = bytes((len(descriptor) + len(pages) + 3, 0, write_protect, len(descriptor)))
        return _alloc(header + descriptor + pages, cdb[4])
    total = len(descriptor) + len(pages) + 6
    header = struct.pack(">HBBHH", total, 0, write_protect, 0, len(descriptor))
    return _alloc(header + descriptor + pages, struct.unpack_from(">H", cdb, 7)[0])


def _mode_select(_disk: ScsiDisk, _cdb: bytes, _data: bytes) -> bytes:
    return b""  # nothing is changeable (MODE SENSE says so); Linux sends this for WCE probing


def _report_luns(_disk: ScsiDisk, cdb: bytes, _data: bytes) -> bytes:
    length = struct.unpack_from(">I", cdb, 6)[0]
    if length < 16:
        raise ScsiCheck(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
    return _alloc(struct.pack(">II", 8, 0) + bytes(8), length)  # LUN 0 only


def _ok(_disk: ScsiDisk, _cdb: bytes, _data: bytes) -> bytes:
    return b""  # START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL: nothing to do here


def _read_toc(disk: ScsiDisk, cdb: bytes, _data: bytes) -> bytes:
    """READ TOC/PMA/ATIP format 0: one data track and the lead-out (MMC-6 6.40)."""
    if disk.device_type != TYPE_ROM:
        raise ScsiCheck(ILLEGAL_REQUEST, INVALID_OPCODE)
    disk._need_medium()
    msf, fmt = cdb[1] & 0x02, cdb[2] & 0x0F
    if fmt not in (0, 1) or msf:
        raise ScsiCheck(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
    length = struct.unpack_from(">H", cdb, 7)[0]
    if fmt == 1:  # session info: first session starts at LBA 0
        body = bytes((1, 1)) + bytes((0, 0x14, 1, 0)) + struct.pack(">I", 0)
    else:
        body = bytes((1, 1))
        body += bytes((0, 0x14, 1, 0)) + struct.pack(">I", 0)
        body += bytes((0, 0x16, 0xAA, 0)) + struct.pack(">I", disk.blocks)
    return _alloc(struct.pack(">H", len(body)) + body, length)


def _get_configuration(disk: ScsiDisk, cdb: bytes, _data: bytes) -> bytes:
    if disk.device_type != TYPE_ROM:
        raise ScsiCheck(ILLEGAL_REQUEST, INVALID_OPCODE)
    profile = 0x0008 if disk.backend is not None else 0  # CD-ROM
    header = struct.pack(">IHH", 4, 0, profile)
    return _alloc(header, struct.unpack_from(">H", cdb, 7)[0])


_COMMANDS = {
    0x00: _test_unit_ready,
    0x03: _request_sense,
    0x08: _read,
    0x0A: _write,
    0x12: _inquiry,
    0x15: _mode_select,
    0x1A: _mode_sense,
    0x1B: _ok,
    0x1E: _ok,
    0x25: _read_capacity_10,
    0x28: _read,
    0x2A: _write,
    0x2E: _write,  # WRITE AND VERIFY(10)
    0x2F: _verify,
    0x35: _synchronize_cache,
    0x43: _read_toc,
    0x46: _get_configuration,
    0x55: _mode_select,
    0x5A: _mode_sense,
    0x88: _read,
    0x8A: _write,
    0x91: _synchronize_cache,
    0x9E: _service_action_in_16,
    0xA0: _report_luns,
    0xA8: _read,
    0xAA: _write,
}


def scsi_cd(backend: BlockBackend | None, serial: str = "") -> ScsiDisk:
    return ScsiDisk(backend, serial, TYPE_ROM, 2048, product="QEMU CD-ROM")


def scsi_hd(backend: BlockBackend, serial: str = "") -> ScsiDisk:
    return ScsiDisk(backend, serial)
