"""virtio-mmio transport (virtio 1.1 section 4.2, register layout version 2) and the virtqueues.

A board declares a bank of transport slots (`VirtioMmio`); device models (`VirtioDevice`
subclasses: blk.py, rng.py, console.py) are plugged into free slots before boot. Virtqueues
are split rings (virtio 1.1 section 2.6) living in guest RAM, read and written through the
host's `dma_read` / `dma_write`; a used buffer raises the slot's interrupt line (level, until the
driver writes InterruptACK).

Everything here is plain Python over a `DmaHost`, so unit tests drive registers and rings with
a fake RAM and no unicorn.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, cast

from qemuser.system.devices.base import Access, Device, DeviceHost, FdtContext, NullHost, Store
from qemuser.system.devices.registry import Property
from qemuser.system.fdt import Node, u64_cells


class DmaHost(DeviceHost, Protocol):
    """A `DeviceHost` that also lets devices reach guest RAM (bus-master DMA)."""

    def dma_read(self, guest_addr: int, size: int) -> bytes:
        """Guest RAM bytes; raises DmaError outside RAM."""
        ...

    def dma_write(self, guest_addr: int, data: bytes) -> None:
        """Store into guest RAM; raises DmaError outside RAM."""
        ...


class DmaError(Exception):
    """A ring or buffer address outside guest RAM: the request cannot be served."""


# --- register offsets (include/uapi/linux/virtio_mmio.h) -----------------------------------
MAGIC_VALUE = 0x000
VERSION = 0x004
DEVICE_ID = 0x008
VENDOR_ID = 0x00C
DEVICE_FEATURES = 0x010
DEVICE_FEATURES_SEL = 0x014
DRIVER_FEATURES = 0x020
DRIVER_FEATURES_SEL = 0x024
QUEUE_SEL = 0x030
QUEUE_NUM_MAX = 0x034
QUEUE_NUM = 0x038
QUEUE_READY = 0x044
QUEUE_NOTIFY = 0x050
INTERRUPT_STATUS = 0x060
INTERRUPT_ACK = 0x064
STATUS = 0x070
QUEUE_DESC_LOW = 0x080
QUEUE_DESC_HIGH = 0x084
QUEUE_DRIVER_LOW = 0x090
QUEUE_DRIVER_HIGH = 0x094
QUEUE_DEVICE_LOW = 0x0A0
QUEUE_DEVICE_HIGH = 0x0A4
SHM_LEN_LOW = 0x0B0
SHM_LEN_HIGH = 0x0B4
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100

MAGIC = 0x7472_6976  # "virt", little-endian
VENDOR_QEMU = 0x554D_4551  # "QEMU": what QEMU's transports report, and what guests may expect

# Device status bits (include/uapi/linux/virtio_config.h)
STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK = 1, 2, 4, 8
STATUS_NEEDS_RESET, STATUS_FAILED = 0x40, 0x80

# Transport feature bits (include/uapi/linux/virtio_config.h, virtio_ring.h)
F_RING_INDIRECT_DESC = 1 << 28
F_VERSION_1 = 1 << 32
TRANSPORT_FEATURES = F_RING_INDIRECT_DESC | F_VERSION_1

INT_USED_BUFFER, INT_CONFIG_CHANGE = 1, 2

# struct vring_desc (include/uapi/linux/virtio_ring.h): le64 addr, le32 len, le16 flags, le16 next
DESC = struct.Struct("<QIHH")
DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT = 1, 2, 4
# struct vring_avail: le16 flags, le16 idx, le16 ring[num]; struct vring_used: le16 flags,
# le16 idx, struct vring_used_elem { le32 id; le32 len; } ring[num]
USED_ELEM = struct.Struct("<II")


@dataclass
class Buffer:
    """One descriptor's guest buffer; `writable` buffers are device-written (VIRTQ_DESC_F_WRITE)."""

    guest_addr: int
    length: int
    writable: bool


@dataclass
class Chain:
    """A descriptor chain the driver made available: its head index and its buffers in order."""

    head: int
    buffers: list[Buffer]

    def writable_length(self) -> int:
        return sum(b.length for b in self.buffers if b.writable)

    def read(self, host: DmaHost) -> bytes:
        """All device-readable bytes, concatenated."""
        return b"".join(
            host.dma_read(b.guest_addr, b.length) for b in self.buffers if not b.writable
        )

    def write(self, host: DmaHost, offset: int, data: bytes) -> None:
        """Write `data` at `offset` within the concatenated device-writable buffers."""
        for buf in (b for b in self.buffers if b.writable):
            if not data:
                return
            if offset >= buf.length:
                offset -= buf.length
                continue
            part = data[: buf.length - offset]
            host.dma_write(buf.guest_addr + offset, part)
            data = data[len(part) :]
            offset = 0
        if data:
            raise DmaError("write beyond the chain's writable buffers")


@dataclass
class Virtqueue:
    """A split virtqueue: descriptor table, driver (avail) ring and device (used) ring."""

    num_max: int = 1024
    num: int = 0
    ready: bool = False
    desc: int = 0
    driver: int = 0
    device: int = 0
    last_avail: int = 0  # the next avail ring entry the device will consume (free-running)
    used_idx: int = 0

    def reset(self) -> None:
        self.num, self.ready, self.desc, self.driver, self.device = 0, False, 0, 0, 0
        self.last_avail = self.used_idx = 0

    def pop(self, host: DmaHost, indirect: bool) -> Chain | None:
        """The next available chain, or None when the driver has made none available."""
        if not self.ready or not self.num:
            return None
        (avail_idx,) = struct.unpack("<H", host.dma_read(self.driver + 2, 2))
        if avail_idx == self.last_avail:
            return None
        slot = self.driver + 4 + 2 * (self.last_avail % self.num)
        (head,) = struct.unpack("<H", host.dma_read(slot, 2))
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        return Chain(head, self._walk(host, self.desc, self.num, head, indirect))

    def _walk(
        self, host: DmaHost, table: int, size: int, index: int, indirect: bool
    ) -> list[Buffer]:
        buffers: list[Buffer] = []
        for _ in range(size):  # a chain longer than its table is a loop: stop there
            if index >= size:
                raise DmaError(f"descriptor index {index} outside a table of {size}")
            addr, length, flags, nxt = DESC.unpack(host.dma_read(table + 16 * index, 16))
            if flags & DESC_F_INDIRECT and indirect:
                # An indirect table replaces this descriptor (virtio 1.1 section 2.6.5.3).
                buffers += self._walk(host, addr, length // 16, 0, indirect=False)
            else:
                buffers.append(Buffer(addr, length, bool(flags & DESC_F_WRITE)))
            if not flags & DESC_F_NEXT:
                return buffers
            index = nxt
        raise DmaError("descriptor chain loops")

    def push(self, host: DmaHost, chain: Chain, written: int) -> None:
        """Return a chain to the driver through the used ring with `written` bytes filled."""
        entry = self.device + 4 + USED_ELEM.size * (self.used_idx % self.num)
        host.dma_write(entry, USED_ELEM.pack(chain.head, written))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        # The element must be visible before the index that publishes it (one thread here).
        host.dma_write(self.device + 2, struct.pack("<H", self.used_idx))


class VirtioDevice:
    """A virtio device model behind a transport: its id, queues, features and config space.

    Subclasses are pluggable (devices/registry.py): they declare their -device name, category
    and properties, and a `from_options` constructor."""

    model: ClassVar[str] = ""  # the -device name, as QEMU spells it
    bus: ClassVar[str] = "virtio-bus"
    category: ClassVar[str] = "Misc"
    description: ClassVar[str] = ""
    properties: ClassVar[tuple[Property, ...]] = ()
    device_id: ClassVar[int] = 0
    num_queues: ClassVar[int] = 0

    def __init__(self) -> None:
        self.transport: VirtioTransport | None = None

    def features(self) -> int:
        """Device-specific feature bits (0-23); the transport adds its own."""
        return 0

    def config(self) -> bytes:
        """The device configuration space as the driver sees it at CONFIG (0x100)."""
        return b""

    def notify(self, queue_index: int) -> None:
        """The driver made buffers available on `queue_index`."""

    def reset(self) -> None:
        """The driver wrote 0 to Status: forget in-flight state."""


class VirtioTransport:
    """One virtio-mmio slot (version 2 registers); reads all zero but magic, version and vendor
    while no device is plugged, as QEMU's empty transports do, so the guest skips it."""

    def __init__(self, base: int, irq: int) -> None:
        self.base = base
        self.irq = irq
        self.host: DmaHost = _NO_DMA
        self.device: VirtioDevice | None = None
        self.queues: list[Virtqueue] = []
        self._reset_registers()

    def _reset_registers(self) -> None:
        self.status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self.queue_sel = 0
        self.interrupt_status = 0
        self.config_generation = 0

    def plug(self, device: VirtioDevice) -> None:
        self.device = device
        device.transport = self
        # QEMU's transport offers VIRTQUEUE_MAX_SIZE (1024) on every queue a device has.
        self.queues = [Virtqueue(num_max=1024) for _ in range(device.num_queues)]

    def offered_features(self) -> int:
        return (self.device.features() if self.device else 0) | TRANSPORT_FEATURES

    def negotiated(self, feature: int) -> bool:
        return bool(self.driver_features & feature)

    def _queue(self) -> Virtqueue | None:
        return self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None

    # --- registers ------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION:
            return 2
        if offset == VENDOR_ID:
            return VENDOR_QEMU
        if self.device is None:
            return 0
        if offset >= CONFIG:
            config = self.device.config()
            start = offset - CONFIG
            return int.from_bytes(config[start : start + size].ljust(size, b"\0"), "little")
        queue = self._queue()
        if offset == DEVICE_ID:
            return self.device.device_id
        if offset == DEVICE_FEATURES:
            return (
                (self.offered_features() >> (32 * self.device_features_sel)) & 0xFFFF_FFFF
                if self.device_features_sel < 2
                else 0
            )
        if offset == QUEUE_NUM_MAX:
            return queue.num_max if queue else 0
        if offset == QUEUE_READY:
            return int(queue.ready) if queue else 0
        if offset == INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == STATUS:
            return self.status
        if offset in (SHM_LEN_LOW, SHM_LEN_HIGH):
            return 0xFFFF_FFFF  # no shared memory regions (a length of ~0 says "none")
        if offset == CONFIG_GENERATION:
            return self.config_generation
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if self.device is None or offset >= CONFIG:
            return  # no device-writable config fields in the devices modelled here
        queue = self._queue()
        if offset == DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == DRIVER_FEATURES:
            if self.driver_features_sel < 2 and not self.status & STATUS_FEATURES_OK:
                shift = 32 * self.driver_features_sel
                self.driver_features = (self.driver_features & ~(0xFFFF_FFFF << shift)) | (
                    value << shift
                )
        elif offset == DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == QUEUE_SEL:
            self.queue_sel = value
        elif offset == QUEUE_NUM and queue:
            # Split rings index with `% num`: only powers of two up to the maximum make sense.
            if 0 < value <= queue.num_max and not value & (value - 1):
                queue.num = value
        elif offset == QUEUE_READY and queue:
            queue.ready = bool(value & 1)
        elif offset == QUEUE_NOTIFY:
            if value < len(self.queues) and self.status & STATUS_DRIVER_OK:
                self._serve(value)
        elif offset == INTERRUPT_ACK:
            self.interrupt_status &= ~value
            if not self.interrupt_status:
                self.set_line(False)
        elif offset == STATUS:
            self._write_status(value & 0xFF)
        elif queue and offset in (QUEUE_DESC_LOW, QUEUE_DESC_HIGH):
            queue.desc = _set_half(queue.desc, value, high=offset == QUEUE_DESC_HIGH)
        elif queue and offset in (QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH):
            queue.driver = _set_half(queue.driver, value, high=offset == QUEUE_DRIVER_HIGH)
        elif queue and offset in (QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH):
            queue.device = _set_half(queue.device, value, high=offset == QUEUE_DEVICE_HIGH)

    def _write_status(self, value: int) -> None:
        if value == 0:
            for queue in self.queues:
                queue.reset()
            self._reset_registers()
            self.set_line(False)
            if self.device:
                self.device.reset()
            return
        if value & STATUS_FEATURES_OK and not self.status & STATUS_FEATURES_OK:
            # A modern device cannot work with a legacy driver (virtio 1.1 section 6.1), nor
            # accept features it never offered: leave FEATURES_OK clear so the driver sees it.
            accepted = self.driver_features
            if not accepted & F_VERSION_1 or accepted & ~self.offered_features():
                value &= ~STATUS_FEATURES_OK
        self.status = value
        if value & STATUS_DRIVER_OK and self.device:
            # Input that arrived before the driver was ready (console) can be delivered now.
            for index in range(len(self.queues)):
                self.device.notify(index)

    def _serve(self, queue_index: int) -> None:
        assert self.device is not None
        try:
            self.device.notify(queue_index)
        except DmaError:
            # A bad guest address: the device can no longer trust its rings (section 2.1.2).
            self.status |= STATUS_NEEDS_RESET
            self.interrupt_status |= INT_CONFIG_CHANGE
            self.set_line(True)

    # --- helpers for device models --------------------------------------------------------
    def pop(self, queue_index: int) -> Chain | None:
        queue = self.queues[queue_index]
        return queue.pop(self.host, indirect=self.negotiated(F_RING_INDIRECT_DESC))

    def push(self, queue_index: int, chain: Chain, written: int) -> None:
        self.queues[queue_index].push(self.host, chain, written)

    def interrupt(self) -> None:
        """Tell the driver the used ring moved (VIRTIO_MMIO_INT_VRING)."""
        self.interrupt_status |= INT_USED_BUFFER
        self.set_line(True)

    def ready(self) -> bool:
        return bool(self.status & STATUS_DRIVER_OK)

    def set_line(self, level: bool) -> None:
        """The transport's interrupt output (a board line here; INTx on PCI)."""
        self.host.set_irq(self.irq, level)


def _set_half(old: int, value: int, high: bool) -> int:
    """A 64-bit ring address written as two 32-bit registers."""
    value &= 0xFFFF_FFFF
    return (old & 0xFFFF_FFFF) | value << 32 if high else (old & ~0xFFFF_FFFF) | value


class _NoDma(NullHost):
    """Before attach: any DMA is a bug in the caller."""

    def dma_read(self, guest_addr: int, size: int) -> bytes:
        raise DmaError("transport not attached to a machine")

    def dma_write(self, guest_addr: int, data: bytes) -> None:
        raise DmaError("transport not attached to a machine")


_NO_DMA = _NoDma()


@dataclass
class VirtioMmio(Device):
    """A bank of `count` virtio-mmio transports, `stride` bytes apart, on lines first_irq + n.

    As on QEMU's virt boards, the first device plugged takes the highest-addressed slot (QEMU's
    bus list is built in reverse), and the device tree lists every slot, empty ones included.
    """

    kind: ClassVar[str] = "virtio-mmio"
    description: ClassVar[str] = "virtio-mmio transports (virtio 1.1, version 2 registers)"
    provides_bus: ClassVar[str] = "virtio-bus"
    count: int = 8
    stride: int = 0x200
    first_irq: int = 16
    dtb_lowest_first: bool = True  # aarch64 virt lists slots upwards, riscv virt downwards
    slots: list[VirtioTransport] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.size = self.count * self.stride
        self.slots = [
            VirtioTransport(self.base + i * self.stride, self.first_irq + i)
            for i in range(self.count)
        ]

    def attach(self, host: DeviceHost) -> None:
        super().attach(host)
        for slot in self.slots:
            slot.host = cast(DmaHost, host)  # a board's machine also offers DMA

    def windows(self) -> list[tuple[int, int, Access, Store]]:
        return [(self.base, self.size, self.read, self.write)]

    def read(self, offset: int, size: int) -> int:
        return self.slots[offset // self.stride].read(offset % self.stride, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.slots[offset // self.stride].write(offset % self.stride, size, value)

    def plug(self, device: object) -> VirtioTransport:
        """Put `device` in the highest free slot; ValueError when every slot is taken."""
        assert isinstance(device, VirtioDevice)  # only virtio-bus devices are offered here
        for slot in reversed(self.slots):
            if slot.device is None:
                slot.plug(device)
                return slot
        raise ValueError("no free virtio-mmio slot")

    def plugged(self) -> list[VirtioDevice]:
        return [slot.device for slot in self.slots if slot.device is not None]

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        order = self.slots if self.dtb_lowest_first else list(reversed(self.slots))
        for slot in order:
            if ctx.gic:
                # QEMU's virt: <SPI n edge-rising> and dma-coherent (hw/arm/virt.c).
                root.child(
                    f"virtio_mmio@{slot.base:x}",
                    dma_coherent=None,
                    interrupts=[0, slot.irq, 1],
                    reg=u64_cells(slot.base) + u64_cells(self.stride),
                    compatible="virtio,mmio",
                )
            else:
                root.child(
                    f"virtio_mmio@{slot.base:x}",
                    interrupts=[slot.irq],
                    interrupt_parent=ctx.interrupt_parent,
                    reg=u64_cells(slot.base) + u64_cells(self.stride),
                    compatible="virtio,mmio",
                )
