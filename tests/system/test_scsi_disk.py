"""scsi-hd and scsi-cd command sets, no CPU: the CDBs Linux's sd/sr drivers and EDK2's ScsiDisk
send, with the data and sense a real disk (and QEMU's scsi-disk) returns."""

from __future__ import annotations

import struct

import pytest

from qemuser.system.scsi.disk import CHECK_CONDITION, GOOD, scsi_cd, scsi_hd


class Memory:
    def __init__(self, size: int, read_only: bool = False) -> None:
        self.data = bytearray(size)
        self.read_only = read_only
        self.flushes = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.data[offset : offset + length])

    def write(self, offset: int, data: bytes) -> None:
        self.data[offset : offset + len(data)] = data

    def flush(self) -> None:
        self.flushes += 1


def ready(disk):
    """Consume the power-on UNIT ATTENTION, as every initiator does first."""
    first = disk.execute(bytes(6))
    assert first.status == CHECK_CONDITION and first.sense[2] == 0x6 and first.sense[12] == 0x29
    assert disk.execute(bytes(6)).status == GOOD
    return disk


def sense_of(result) -> tuple[int, int, int]:
    assert result.status == CHECK_CONDITION
    return result.sense[2], result.sense[12], result.sense[13]


def test_inquiry_standard_data():
    disk = scsi_hd(Memory(1 << 20), serial="SN123")
    result = disk.execute(bytes((0x12, 0, 0, 0, 96, 0)))
    assert result.status == GOOD
    data = result.data
    assert len(data) == 36
    assert data[0] == 0 and data[1] == 0 and data[2] == 5
    assert (
        data[8:16] == b"QEMU    " and data[16:32] == b"QEMU HARDDISK   " and data[32:36] == b"2.5+"
    )
    cd = scsi_cd(Memory(2048 * 10)).execute(bytes((0x12, 0, 0, 0, 36, 0))).data
    assert cd[0] == 5 and cd[1] == 0x80 and cd[16:32] == b"QEMU CD-ROM     "


def test_inquiry_vpd_pages():
    disk = scsi_hd(Memory(1 << 20), serial="SN123")
    supported = disk.execute(bytes((0x12, 1, 0x00, 0, 255, 0))).data
    assert supported[:4] == bytes((0, 0, 0, 6)) and list(supported[4:]) == [
        0x00,
        0x80,
        0x83,
        0xB0,
        0xB1,
        0xB2,
    ]
    serial = disk.execute(bytes((0x12, 1, 0x80, 0, 255, 0))).data
    assert serial == bytes((0, 0x80, 0, 5)) + b"SN123"
    limits = disk.execute(bytes((0x12, 1, 0xB0, 0, 255, 0))).data
    assert len(limits) == 64 and struct.unpack_from(">I", limits, 8)[0] == 65536
    assert sense_of(disk.execute(bytes((0x12, 1, 0x99, 0, 255, 0)))) == (0x5, 0x24, 0)


def test_capacity_10_and_16():
    disk = ready(scsi_hd(Memory(8 << 20)))
    assert disk.execute(bytes((0x25,)) + bytes(9)).data == struct.pack(">II", 16383, 512)
    cdb = bytes((0x9E, 0x10)) + bytes(8) + struct.pack(">I", 32) + bytes(2)
    data = disk.execute(cdb).data
    assert len(data) == 32 and struct.unpack_from(">QI", data) == (16383, 512)


def test_read_write_10_and_16_land_in_the_backend():
    memory = Memory(1 << 20)
    disk = ready(scsi_hd(memory))
    payload = bytes(range(256)) * 4  # two blocks
    write10 = bytes((0x2A, 0x08)) + struct.pack(">I", 3) + b"\0" + struct.pack(">H", 2) + b"\0"
    assert disk.execute(write10, payload).status == GOOD
    assert memory.data[3 * 512 : 5 * 512] == payload and memory.flushes == 1  # FUA
    read16 = bytes((0x88, 0)) + struct.pack(">QI", 3, 2) + bytes(2)
    assert disk.execute(read16).data == payload
    read6 = bytes((0x08, 0, 0, 4, 1, 0))
    assert disk.execute(read6).data == payload[512:]


def test_out_of_range_and_read_only():
    disk = ready(scsi_hd(Memory(1 << 20, read_only=True)))
    read10 = bytes((0x28, 0)) + struct.pack(">I", 2047) + b"\0" + struct.pack(">H", 2) + b"\0"
    assert sense_of(disk.execute(read10)) == (0x5, 0x21, 0)
    write10 = bytes((0x2A, 0)) + struct.pack(">I", 0) + b"\0" + struct.pack(">H", 1) + b"\0"
    assert sense_of(disk.execute(write10, bytes(512))) == (0x7, 0x27, 0)
    # REQUEST SENSE returns the last error once, then NO SENSE
    assert disk.execute(bytes((0x03, 0, 0, 0, 18, 0))).data[2] == 0x7
    assert disk.execute(bytes((0x03, 0, 0, 0, 18, 0))).data[2] == 0x0


def test_unknown_opcode_is_illegal_request():
    disk = ready(scsi_hd(Memory(1 << 20)))
    assert sense_of(disk.execute(bytes((0xE7,)) + bytes(9))) == (0x5, 0x20, 0)


def test_mode_sense_caching_page_and_write_protect():
    disk = ready(scsi_hd(Memory(1 << 20)))
    data = disk.execute(bytes((0x1A, 0x08, 0x08, 0, 255, 0))).data  # DBD, caching page
    assert data[0] == len(data) - 1 and data[3] == 0 and data[4:6] == bytes((0x08, 0x12))
    assert data[6] & 0x04  # write cache enabled
    ro = ready(scsi_hd(Memory(1 << 20, read_only=True)))
    data10 = ro.execute(bytes((0x5A, 0, 0x3F, 0, 0, 0, 0)) + struct.pack(">H", 255) + b"\0").data
    assert data10[3] & 0x80 and struct.unpack_from(">H", data10, 6)[0] == 8  # WP, one descriptor
    assert sense_of(disk.execute(bytes((0x1A, 0, 0xC8, 0, 255, 0)))) == (0x5, 0x39, 0)


def test_report_luns_and_sync_cache():
    memory = Memory(1 << 20)
    disk = ready(scsi_hd(memory))
    luns = disk.execute(bytes((0xA0, 0, 0, 0, 0, 0)) + struct.pack(">I", 256) + bytes(2)).data
    assert luns == struct.pack(">II", 8, 0) + bytes(8)
    assert disk.execute(bytes((0x35,)) + bytes(9)).status == GOOD and memory.flushes == 1


@pytest.mark.parametrize("blocks", [1, 300])
def test_cd_toc_and_2048_byte_blocks(blocks):
    memory = Memory(2048 * blocks)
    memory.data[2048 * (blocks - 1)] = 0xAB
    cd = ready(scsi_cd(memory))
    assert cd.execute(bytes((0x25,)) + bytes(9)).data == struct.pack(">II", blocks - 1, 2048)
    toc = cd.execute(bytes((0x43, 0, 0, 0, 0, 0, 0)) + struct.pack(">H", 100) + b"\0").data
    assert struct.unpack_from(">H", toc)[0] == len(toc) - 2 and toc[2:4] == bytes((1, 1))
    assert struct.unpack_from(">I", toc, 16)[0] == blocks  # lead-out
    read10 = bytes((0x28, 0)) + struct.pack(">I", blocks - 1) + b"\0" + struct.pack(">H", 1) + b"\0"
    assert cd.execute(read10).data[0] == 0xAB
    write10 = bytes((0x2A, 0)) + struct.pack(">I", 0) + b"\0" + struct.pack(">H", 1) + b"\0"
    assert sense_of(cd.execute(write10, bytes(2048))) == (0x7, 0x27, 0)


def test_cd_without_medium():
    cd = scsi_cd(None)
    cd.execute(bytes(6))  # unit attention
    assert sense_of(cd.execute(bytes(6))) == (0x2, 0x3A, 0)
