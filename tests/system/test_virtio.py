"""virtio-mmio registers and split virtqueues driven directly over a fake RAM, no unicorn."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from qemuser.system.devices.base import FdtContext, NullHost
from qemuser.system.drive import SECTOR, BlockBackend
from qemuser.system.fdt import Node
from qemuser.system.virtio import transport as v
from qemuser.system.virtio.blk import (
    BLK_F_BLK_SIZE,
    BLK_F_FLUSH,
    BLK_F_RO,
    BLK_F_SEG_MAX,
    BLK_REQ_HEADER,
    BLK_S_IOERR,
    BLK_S_OK,
    BLK_S_UNSUPP,
    BLK_T_FLUSH,
    BLK_T_GET_ID,
    BLK_T_IN,
    BLK_T_OUT,
    VirtioBlk,
)
from qemuser.system.virtio.console import VirtioConsole
from qemuser.system.virtio.rng import VirtioRng

RAM_BASE = 0x4000_0000
DESC, AVAIL, USED, DATA = 0x4000_1000, 0x4000_2000, 0x4000_3000, 0x4001_0000


class RamHost(NullHost):
    """A NullHost with 1 MiB of guest RAM at RAM_BASE for the devices' DMA."""

    def __init__(self) -> None:
        super().__init__()
        self.ram = bytearray(1 << 20)

    def _span(self, guest_addr: int, size: int) -> slice:
        start = guest_addr - RAM_BASE
        if start < 0 or start + size > len(self.ram):
            raise v.DmaError(f"0x{guest_addr:x}")
        return slice(start, start + size)

    def dma_read(self, guest_addr: int, size: int) -> bytes:
        return bytes(self.ram[self._span(guest_addr, size)])

    def dma_write(self, guest_addr: int, data: bytes) -> None:
        self.ram[self._span(guest_addr, len(data))] = data

    def poke(self, guest_addr: int, data: bytes) -> None:
        self.dma_write(guest_addr, data)

    def peek(self, guest_addr: int, size: int) -> bytes:
        return self.dma_read(guest_addr, size)


class Driver:
    """Just enough of a virtio driver to set up queue 0..n and submit chains."""

    def __init__(self, transport: v.VirtioTransport, host: RamHost, queues: int = 1) -> None:
        self.t, self.host = transport, host
        self.avail_idx = [0] * queues
        self.next_desc = [0] * queues
        t = transport
        t.write(v.STATUS, 4, 0)
        t.write(v.STATUS, 4, v.STATUS_ACKNOWLEDGE | v.STATUS_DRIVER)
        t.write(v.DRIVER_FEATURES_SEL, 4, 1)
        t.write(v.DRIVER_FEATURES, 4, 1)  # VIRTIO_F_VERSION_1 (bit 32)
        t.write(v.DRIVER_FEATURES_SEL, 4, 0)
        t.write(v.DRIVER_FEATURES, 4, v.F_RING_INDIRECT_DESC)
        t.write(v.STATUS, 4, v.STATUS_ACKNOWLEDGE | v.STATUS_DRIVER | v.STATUS_FEATURES_OK)
        assert t.read(v.STATUS, 4) & v.STATUS_FEATURES_OK
        for q in range(queues):
            t.write(v.QUEUE_SEL, 4, q)
            assert t.read(v.QUEUE_READY, 4) == 0
            t.write(v.QUEUE_NUM, 4, 8)
            for low, addr in (
                (v.QUEUE_DESC_LOW, DESC),
                (v.QUEUE_DRIVER_LOW, AVAIL),
                (v.QUEUE_DEVICE_LOW, USED),
            ):
                t.write(low, 4, addr + q * 0x4000)
                t.write(low + 4, 4, 0)
            t.write(v.QUEUE_READY, 4, 1)
        t.write(v.STATUS, 4, 0xF)

    def submit(self, buffers: list[tuple[int, int, bool]], q: int = 0, notify: bool = True) -> int:
        """Chain `buffers` (addr, len, device-writable) into the descriptor table; returns head."""
        table = DESC + q * 0x4000
        head = self.next_desc[q]
        for i, (addr, length, writable) in enumerate(buffers):
            index = head + i
            last = i == len(buffers) - 1
            flags = (v.DESC_F_WRITE if writable else 0) | (0 if last else v.DESC_F_NEXT)
            self.host.poke(table + 16 * index, v.DESC.pack(addr, length, flags, index + 1))
        self.next_desc[q] = head + len(buffers)
        self.publish(head, q, notify)
        return head

    def publish(self, head: int, q: int = 0, notify: bool = True) -> None:
        avail = AVAIL + q * 0x4000
        self.host.poke(avail + 4 + 2 * (self.avail_idx[q] % 8), struct.pack("<H", head))
        self.avail_idx[q] += 1
        self.host.poke(avail + 2, struct.pack("<H", self.avail_idx[q]))
        if notify:
            self.t.write(v.QUEUE_NOTIFY, 4, q)

    def used(self, q: int = 0) -> tuple[int, list[tuple[int, int]]]:
        used = USED + q * 0x4000
        (idx,) = struct.unpack("<H", self.host.peek(used + 2, 2))
        elems = [v.USED_ELEM.unpack(self.host.peek(used + 4 + 8 * i, 8)) for i in range(idx)]
        return idx, elems


def slot_with(device: v.VirtioDevice) -> tuple[v.VirtioTransport, RamHost]:
    bank = v.VirtioMmio(base=0x0A00_0000, count=4, stride=0x200, first_irq=16)
    host = RamHost()
    bank.attach(host)
    return bank.plug(device), host


def disk(tmp_path: Path, sectors: int = 8, read_only: bool = False) -> BlockBackend:
    image = tmp_path / "disk.img"
    image.write_bytes(b"".join(bytes([i]) * SECTOR for i in range(sectors)))
    return BlockBackend(str(image), read_only=read_only)


def test_empty_slot_answers_like_qemu() -> None:
    bank = v.VirtioMmio(base=0x0A00_0000, count=32, stride=0x200, first_irq=16)
    bank.attach(RamHost())
    for slot_offset in (0, 31 * 0x200):
        assert bank.read(slot_offset + v.MAGIC_VALUE, 4) == 0x7472_6976
        assert bank.read(slot_offset + v.VERSION, 4) == 2
        assert bank.read(slot_offset + v.VENDOR_ID, 4) == 0x554D_4551
        assert bank.read(slot_offset + v.DEVICE_ID, 4) == 0
        assert bank.read(slot_offset + v.QUEUE_NUM_MAX, 4) == 0


def test_first_device_takes_highest_slot_and_bank_fills_up(tmp_path: Path) -> None:
    bank = v.VirtioMmio(base=0x0A00_0000, count=2, stride=0x200, first_irq=16)
    first = bank.plug(VirtioRng())
    second = bank.plug(VirtioBlk(disk(tmp_path)))
    assert (first.base, first.irq) == (0x0A00_0200, 17)
    assert (second.base, second.irq) == (0x0A00_0000, 16)
    assert bank.read(0x200 + v.DEVICE_ID, 4) == 4
    assert bank.read(v.DEVICE_ID, 4) == 2
    with pytest.raises(ValueError, match="no free virtio-mmio slot"):
        bank.plug(VirtioRng())


def test_features_and_version_1_negotiation(tmp_path: Path) -> None:
    transport, _ = slot_with(VirtioBlk(disk(tmp_path, read_only=True)))
    transport.write(v.DEVICE_FEATURES_SEL, 4, 1)
    assert transport.read(v.DEVICE_FEATURES, 4) == 1  # VIRTIO_F_VERSION_1
    transport.write(v.DEVICE_FEATURES_SEL, 4, 0)
    low = transport.read(v.DEVICE_FEATURES, 4)
    assert low == v.F_RING_INDIRECT_DESC | BLK_F_SEG_MAX | BLK_F_RO | BLK_F_BLK_SIZE | (BLK_F_FLUSH)
    # A legacy driver (no VERSION_1) does not get FEATURES_OK.
    transport.write(v.STATUS, 4, 3)
    transport.write(v.STATUS, 4, 3 | v.STATUS_FEATURES_OK)
    assert transport.read(v.STATUS, 4) == 3
    transport.write(v.STATUS, 4, 0)
    assert transport.read(v.STATUS, 4) == 0


def test_blk_config_space_capacity(tmp_path: Path) -> None:
    transport, _ = slot_with(VirtioBlk(disk(tmp_path, sectors=8)))
    assert transport.read(v.CONFIG, 4) == 8 and transport.read(v.CONFIG + 4, 4) == 0
    assert transport.read(v.CONFIG, 8) == 8
    assert transport.read(v.CONFIG + 12, 4) == 254  # seg_max
    assert transport.read(v.CONFIG + 20, 4) == 512  # blk_size
    assert transport.read(v.CONFIG_GENERATION, 4) == 0


def blk_request(kind: int, sector: int) -> bytes:
    return BLK_REQ_HEADER.pack(kind, 0, sector)


def test_blk_read_sector_raises_interrupt_and_fills_used_ring(tmp_path: Path) -> None:
    transport, host = slot_with(VirtioBlk(disk(tmp_path)))
    driver = Driver(transport, host)
    host.poke(DATA, blk_request(BLK_T_IN, 3))
    head = driver.submit([(DATA, 16, False), (DATA + 0x100, 1024, True), (DATA + 0x80, 1, True)])
    assert driver.used() == (1, [(head, 1025)])
    assert host.peek(DATA + 0x100, 1024) == bytes([3]) * 512 + bytes([4]) * 512
    assert host.peek(DATA + 0x80, 1) == bytes([BLK_S_OK])
    assert transport.read(v.INTERRUPT_STATUS, 4) == v.INT_USED_BUFFER
    assert host.irqs[transport.irq] is True
    transport.write(v.INTERRUPT_ACK, 4, v.INT_USED_BUFFER)
    assert transport.read(v.INTERRUPT_STATUS, 4) == 0
    assert host.irqs[transport.irq] is False


def test_blk_write_through_indirect_table_reaches_the_file(tmp_path: Path) -> None:
    backend = disk(tmp_path)
    transport, host = slot_with(VirtioBlk(backend))
    driver = Driver(transport, host)
    table = DATA + 0x2000
    host.poke(DATA, blk_request(BLK_T_OUT, 1))
    host.poke(DATA + 0x200, b"written by a driver".ljust(512, b"."))
    host.poke(table, v.DESC.pack(DATA, 16, v.DESC_F_NEXT, 1))
    host.poke(table + 16, v.DESC.pack(DATA + 0x200, 512, v.DESC_F_NEXT, 2))
    host.poke(table + 32, v.DESC.pack(DATA + 0x80, 1, v.DESC_F_WRITE, 0))
    host.poke(DESC, v.DESC.pack(table, 48, v.DESC_F_INDIRECT, 0))
    driver.publish(0)
    assert driver.used() == (1, [(0, 1)])
    assert host.peek(DATA + 0x80, 1) == bytes([BLK_S_OK])
    data = Path(backend.path).read_bytes()
    assert data[512:1024] == b"written by a driver".ljust(512, b".")
    assert data[:512] == bytes(512) and data[1024:1536] == bytes([2]) * 512


def test_blk_errors_flush_get_id_and_read_only(tmp_path: Path) -> None:
    transport, host = slot_with(VirtioBlk(disk(tmp_path, read_only=True), serial="SER123"))
    driver = Driver(transport, host)
    cases = [
        (blk_request(BLK_T_IN, 8), [(DATA + 0x100, 512, True)], BLK_S_IOERR),  # past end
        (blk_request(BLK_T_OUT, 0), [(DATA + 0x100, 512, False)], BLK_S_IOERR),  # read-only
        (blk_request(BLK_T_FLUSH, 0), [], BLK_S_OK),
        (blk_request(BLK_T_GET_ID, 0), [(DATA + 0x100, 20, True)], BLK_S_OK),
        (blk_request(99, 0), [], BLK_S_UNSUPP),
    ]
    for n, (header, middle, status) in enumerate(cases, start=1):
        host.poke(DATA + 0x100, bytes(512))
        host.poke(DATA, header)
        driver.next_desc[0] = 0
        driver.submit([(DATA, 16, False), *middle, (DATA + 0x80, 1, True)])
        assert driver.used()[0] == n
        assert host.peek(DATA + 0x80, 1) == bytes([status]), header
        if header == blk_request(BLK_T_GET_ID, 0):
            assert host.peek(DATA + 0x100, 20) == b"SER123".ljust(20, b"\0")


def test_queue_reset_and_notify_before_driver_ok_is_ignored(tmp_path: Path) -> None:
    transport, host = slot_with(VirtioRng())
    driver = Driver(transport, host)
    transport.write(v.STATUS, 4, 0)  # reset: queues forgotten
    transport.write(v.QUEUE_SEL, 4, 0)
    assert transport.read(v.QUEUE_READY, 4) == 0
    assert transport.read(v.QUEUE_NUM_MAX, 4) == 1024
    transport.write(v.QUEUE_NOTIFY, 4, 0)
    assert driver.used() == (0, [])


def test_rng_fills_buffers() -> None:
    transport, host = slot_with(VirtioRng())
    driver = Driver(transport, host)
    head = driver.submit([(DATA, 64, True)])
    assert driver.used() == (1, [(head, 64)])
    assert host.peek(DATA, 64) != bytes(64)  # 2**-512 odds of a false failure


def test_console_transmit_and_receive() -> None:
    console = VirtioConsole()
    console.connected = True
    transport, host = slot_with(console)
    console.feed_input(b"typed early")  # before DRIVER_OK: kept until buffers exist
    driver = Driver(transport, host, queues=2)
    host.poke(DATA, b"hello hvc0\n")
    driver.submit([(DATA, 11, False)], q=VirtioConsole.TX)
    assert host.console == b"hello hvc0\n"
    assert driver.used(q=1) == (1, [(0, 0)])
    driver.submit([(DATA + 0x100, 4, True)], q=VirtioConsole.RX)
    assert driver.used(q=0) == (1, [(0, 4)])
    assert host.peek(DATA + 0x100, 4) == b"type"
    driver.submit([(DATA + 0x200, 64, True)], q=VirtioConsole.RX)
    assert driver.used(q=0)[1][1] == (1, 7)
    assert host.peek(DATA + 0x200, 7) == b"d early"


def test_bad_ring_address_sets_needs_reset() -> None:
    transport, host = slot_with(VirtioRng())
    driver = Driver(transport, host)
    host.poke(DESC, v.DESC.pack(0x1000, 64, v.DESC_F_WRITE, 0))  # outside RAM
    driver.publish(0)
    assert transport.read(v.STATUS, 4) & v.STATUS_NEEDS_RESET
    assert transport.read(v.INTERRUPT_STATUS, 4) == v.INT_CONFIG_CHANGE


def test_device_tree_lists_every_slot() -> None:
    bank = v.VirtioMmio(base=0x0A00_0000, count=32, stride=0x200, first_irq=16)
    root = Node("")
    bank.fdt(root, FdtContext(interrupt_parent=1, clock=2, gic=True))
    assert [c.name for c in root.children][:2] == ["virtio_mmio@a000000", "virtio_mmio@a000200"]
    assert len(root.children) == 32
    last = root.children[-1].props
    assert last["interrupts"] == [0, 47, 1]
    assert last["reg"] == [0, 0x0A00_3E00, 0, 0x200]
    assert last["compatible"] == "virtio,mmio" and "dma-coherent" in last
    riscv = v.VirtioMmio(
        base=0x1000_1000, count=8, stride=0x1000, first_irq=1, dtb_lowest_first=False
    )
    soc = Node("soc")
    riscv.fdt(soc, FdtContext(interrupt_parent=9, clock=0, gic=False))
    assert soc.children[0].name == "virtio_mmio@10008000"
    assert soc.children[0].props["interrupts"] == [8]
    assert soc.children[0].props["interrupt-parent"] == 9


def test_snapshot_overlay_keeps_the_image_unchanged(tmp_path: Path) -> None:
    backend = BlockBackend(str(disk(tmp_path, sectors=4).path), snapshot=True)
    before = Path(backend.path).read_bytes()
    backend.write(512 + 100, b"x" * 600)  # straddles sectors 1 and 2
    backend.flush()
    assert backend.read(512, 1024) == (
        bytes([1]) * 100 + b"x" * 412 + b"x" * 188 + bytes([2]) * (512 - 188)
    )
    assert backend.read(0, 512) == bytes([0]) * 512  # untouched sectors read through
    assert backend.read(612, 10) == b"x" * 10  # a read inside an overlaid sector
    assert Path(backend.path).read_bytes() == before
