"""virtio over PCI (virtio 1.1 section 4.1), modern interface only, as QEMU's virtio-*-pci on a
PCI Express bus (disable-legacy=auto is "on" there): vendor 0x1af4, device 0x1040 + the virtio
device id, the common/notify/ISR/device configuration structures in BAR 4 (64-bit,
prefetchable, 16 KiB, QEMU's layout), found through vendor-specific capabilities.

Interrupts are INTx (no MSI-X table is offered, so drivers read the ISR and share the line); the
queues, features and status are the same `VirtioTransport` state the virtio-mmio transport
uses, so every virtio device model works over both.
"""

from __future__ import annotations

import struct
from typing import ClassVar

from qemuser.system.devices.base import DeviceHost
from qemuser.system.devices.registry import (
    DeviceOptionError,
    PlugContext,
    Property,
    pluggable,
)
from qemuser.system.pci.function import Bar, PciFunction
from qemuser.system.virtio.blk import VirtioBlk
from qemuser.system.virtio.console import VirtioConsole
from qemuser.system.virtio.net import VirtioNet
from qemuser.system.virtio.rng import VirtioRng
from qemuser.system.virtio.scsi import VirtioScsi
from qemuser.system.virtio.transport import STATUS_DRIVER_OK, VirtioDevice, VirtioTransport

VIRTIO_VENDOR = 0x1AF4
MODERN_DEVICE_BASE = 0x1040
QEMU_SUBSYSTEM = 0x1100  # PCI_SUBDEVICE_ID_QEMU
NO_VECTOR = 0xFFFF  # VIRTIO_MSI_NO_VECTOR: what msix_config reads without MSI-X

BAR_INDEX = 4
BAR_SIZE = 0x4000
COMMON_OFFSET, ISR_OFFSET, DEVICE_OFFSET, NOTIFY_OFFSET = 0x0000, 0x1000, 0x2000, 0x3000
NOTIFY_MULTIPLIER = 4
# cfg_type of struct virtio_pci_cap (include/uapi/linux/virtio_pci.h)
CAP_COMMON, CAP_NOTIFY, CAP_ISR, CAP_DEVICE = 1, 2, 3, 4
PCI_CAP_VENDOR = 0x09

# struct virtio_pci_common_cfg offsets
DFSELECT, DF, GFSELECT, GF = 0x00, 0x04, 0x08, 0x0C
MSIX, NUMQ, STATUS, CFGGEN = 0x10, 0x12, 0x14, 0x15
Q_SELECT, Q_SIZE, Q_MSIX, Q_ENABLE, Q_NOFF = 0x16, 0x18, 0x1A, 0x1C, 0x1E
Q_DESC, Q_AVAIL, Q_USED = 0x20, 0x28, 0x30
COMMON_LENGTH = 0x38


class PciVirtioTransport(VirtioTransport):
    """The virtio state of one PCI function; its interrupt output is the function's INTx."""

    def __init__(self, function: VirtioPciFunction) -> None:
        super().__init__(base=0, irq=0)
        self.function = function

    def set_line(self, level: bool) -> None:
        self.function.set_intx(level)


class VirtioPciFunction(PciFunction):
    def __init__(self, device: VirtioDevice, class_code: int) -> None:
        super().__init__(
            VIRTIO_VENDOR,
            MODERN_DEVICE_BASE + device.device_id,
            class_code,
            revision=1,  # modern-only devices are revision 1 (virtio 1.1 section 4.1.2.1)
            subsystem_vendor=VIRTIO_VENDOR,
            subsystem=QEMU_SUBSYSTEM,
            bars=(Bar(BAR_INDEX, BAR_SIZE, mem64=True, prefetchable=True),),
        )
        self.transport = PciVirtioTransport(self)
        self.transport.plug(device)
        config_length = max(len(device.config()), 4)

        def cap(cfg_type: int, offset: int, length: int, extra: bytes = b"") -> bytes:
            # struct virtio_pci_cap after cap_vndr/cap_next: cap_len, cfg_type, bar, id,
            # padding[2], le32 offset, le32 length
            return struct.pack("<BBBB2xII", 16 + len(extra), cfg_type, BAR_INDEX, 0, offset,
                               length) + extra  # fmt: skip

        self.add_capability(PCI_CAP_VENDOR, cap(CAP_COMMON, COMMON_OFFSET, 0x1000), 0x40)
        self.add_capability(PCI_CAP_VENDOR, cap(CAP_ISR, ISR_OFFSET, 0x1000), 0x50)
        self.add_capability(PCI_CAP_VENDOR, cap(CAP_DEVICE, DEVICE_OFFSET, config_length), 0x60)
        notify = cap(CAP_NOTIFY, NOTIFY_OFFSET, 0x1000, struct.pack("<I", NOTIFY_MULTIPLIER))
        self.add_capability(PCI_CAP_VENDOR, notify, 0x70)

    def attach(self, host: DeviceHost) -> None:
        self.transport.host = host  # type: ignore[assignment]  # a machine also offers DMA

    # --- BAR 4 ---
    def bar_read(self, index: int, offset: int, size: int) -> int:
        t = self.transport
        if offset < ISR_OFFSET:
            return self._common_read(offset, size)
        if offset < DEVICE_OFFSET:
            if offset != ISR_OFFSET:
                return 0
            # Reading the ISR status clears it and deasserts the interrupt (section 4.1.4.5).
            value = t.interrupt_status
            t.interrupt_status = 0
            t.set_line(False)
            return value
        if offset < NOTIFY_OFFSET:
            assert t.device is not None
            config = t.device.config()
            start = offset - DEVICE_OFFSET
            return int.from_bytes(config[start : start + size].ljust(size, b"\0"), "little")
        return 0

    def bar_write(self, index: int, offset: int, size: int, value: int) -> None:
        t = self.transport
        if offset < ISR_OFFSET:
            self._common_write(offset, size, value)
        elif NOTIFY_OFFSET <= offset < NOTIFY_OFFSET + 0x1000:
            queue = (offset - NOTIFY_OFFSET) // NOTIFY_MULTIPLIER
            if queue < len(t.queues) and t.status & STATUS_DRIVER_OK:
                t._serve(queue)
        elif DEVICE_OFFSET <= offset < NOTIFY_OFFSET:
            device = t.device
            if device is not None and hasattr(device, "config_write"):
                device.config_write(offset - DEVICE_OFFSET, size, value)

    def _common_read(self, offset: int, size: int) -> int:
        t = self.transport
        queue = t._queue()
        fields = {
            DFSELECT: t.device_features_sel,
            DF: (t.offered_features() >> (32 * t.device_features_sel)) & 0xFFFF_FFFF
            if t.device_features_sel < 2
            else 0,
            GFSELECT: t.driver_features_sel,
            GF: (t.driver_features >> (32 * t.driver_features_sel)) & 0xFFFF_FFFF
            if t.driver_features_sel < 2
            else 0,
            MSIX: NO_VECTOR,
            NUMQ: len(t.queues),
            STATUS: t.status,
            CFGGEN: t.config_generation,
            Q_SELECT: t.queue_sel,
        }
        if queue is not None:
            fields |= {
                Q_SIZE: queue.num or queue.num_max,
                Q_MSIX: NO_VECTOR,
                Q_ENABLE: int(queue.ready),
                Q_NOFF: t.queue_sel,
                Q_DESC: queue.desc,
                Q_DESC + 4: queue.desc >> 32,
                Q_AVAIL: queue.driver,
                Q_AVAIL + 4: queue.driver >> 32,
                Q_USED: queue.device,
                Q_USED + 4: queue.device >> 32,
            }
        value = fields.get(offset, 0)
        return value & ((1 << (8 * size)) - 1)

    def _common_write(self, offset: int, size: int, value: int) -> None:
        t = self.transport
        queue = t._queue()
        if size == 8 and offset in (Q_DESC, Q_AVAIL, Q_USED):
            self._common_write(offset, 4, value & 0xFFFF_FFFF)
            self._common_write(offset + 4, 4, value >> 32)
            return
        if offset == DFSELECT:
            t.device_features_sel = value
        elif offset == GFSELECT:
            t.driver_features_sel = value
        elif offset == GF:
            if t.driver_features_sel < 2 and not t.status & 8:  # FEATURES_OK freezes them
                shift = 32 * t.driver_features_sel
                t.driver_features = (t.driver_features & ~(0xFFFF_FFFF << shift)) | (value << shift)
        elif offset == STATUS:
            t._write_status(value & 0xFF)
        elif offset == Q_SELECT:
            t.queue_sel = value
        elif queue is None:
            return
        elif offset == Q_SIZE:
            if 0 < value <= queue.num_max and not value & (value - 1):
                queue.num = value
        elif offset == Q_ENABLE:
            if value & 1:
                queue.num = queue.num or queue.num_max
                queue.ready = True
        elif offset in (Q_DESC, Q_DESC + 4):
            queue.desc = _half(queue.desc, value, offset == Q_DESC + 4)
        elif offset in (Q_AVAIL, Q_AVAIL + 4):
            queue.driver = _half(queue.driver, value, offset == Q_AVAIL + 4)
        elif offset in (Q_USED, Q_USED + 4):
            queue.device = _half(queue.device, value, offset == Q_USED + 4)


def _half(old: int, value: int, high: bool) -> int:
    value &= 0xFFFF_FFFF
    return (old & 0xFFFF_FFFF) | value << 32 if high else (old & ~0xFFFF_FFFF) | value


# --- the -device models: a virtio device behind a PCI function -------------------------------

PCI_PROPERTIES = (
    Property("addr", "int32", "Slot and optional function number, example: 06.0 or 06"),
    Property("disable-legacy", "OnOffAuto", "on/off/auto (only on: modern-only devices)"),
    Property("disable-modern", "bool", "(only off)"),
    Property("bootindex", "int32", "boot order of this device for the firmware"),
    Property("id", "str", "the device's id"),
)


class VirtioPciProxy:
    """A `virtio-*-pci` device: `virtio` is the device model, `function` its PCI face."""

    model: ClassVar[str] = ""
    bus: ClassVar[str] = "PCI"
    category: ClassVar[str] = "Misc"
    description: ClassVar[str] = ""
    inner: ClassVar[type] = VirtioDevice
    inner_model: ClassVar[str] = ""
    class_code: ClassVar[int] = 0x00FF00
    properties: ClassVar[tuple[Property, ...]] = ()

    def __init__(self, virtio: VirtioDevice, pci_slot: int | None) -> None:
        self.virtio = virtio
        self.pci_slot = pci_slot
        self.function = VirtioPciFunction(virtio, self.class_code)

    def pci_function(self) -> PciFunction:
        return self.function

    @classmethod
    def from_options(cls, opts: dict[str, str], plan: PlugContext, option: str) -> VirtioPciProxy:
        pci_only = {p.name for p in PCI_PROPERTIES}
        slot = None
        if "addr" in opts:
            text = opts["addr"]
            slot_text, _, function_text = text.partition(".")
            try:
                slot = int(slot_text, 16)
                function = int(function_text or "0", 16)
            except ValueError:
                raise DeviceOptionError(
                    f"{option}: Parameter 'addr' expects an int32 value or fraction"
                ) from None
            if not 0 < slot < 32 or function:
                raise DeviceOptionError(f"{option}: Property 'addr' doesn't take value '{text}'")
        if opts.get("disable-legacy", "auto") not in ("on", "auto", "yes", "true"):
            raise DeviceOptionError(
                f"{option}: legacy virtio-pci is not supported (disable-legacy=on)"
            )
        if opts.get("disable-modern", "off") not in ("off", "no", "false"):
            raise DeviceOptionError(f"{option}: disable-modern=on (legacy only) is not supported")
        inner_opts = {k: v for k, v in opts.items() if k not in pci_only}
        virtio = cls.inner.from_options(inner_opts, plan, option)  # type: ignore[attr-defined]
        return cls(virtio, slot)


# PCI class codes as QEMU's virtio-pci gives them (hw/virtio/virtio-pci.c).
@pluggable
class VirtioBlkPci(VirtioPciProxy):
    model = "virtio-blk-pci"
    inner = VirtioBlk
    category = "Storage"
    description = "Virtio block device (PCI)"
    class_code = 0x018000  # mass storage, other
    properties = VirtioBlk.properties + PCI_PROPERTIES


@pluggable
class VirtioRngPci(VirtioPciProxy):
    model = "virtio-rng-pci"
    inner = VirtioRng
    category = "Misc"
    description = "Virtio random number generator (PCI)"
    class_code = 0x00FF00
    properties = VirtioRng.properties + PCI_PROPERTIES


@pluggable
class VirtioSerialPci(VirtioPciProxy):
    model = "virtio-serial-pci"
    inner = VirtioConsole
    category = "Input"
    description = "Virtio serial bus (PCI)"
    class_code = 0x078000  # simple communication controller, other
    properties = VirtioConsole.properties + PCI_PROPERTIES


@pluggable
class VirtioScsiPci(VirtioPciProxy):
    model = "virtio-scsi-pci"
    inner = VirtioScsi
    category = "Storage"
    description = "Virtio SCSI controller (PCI)"
    class_code = 0x010000  # SCSI storage controller
    properties = VirtioScsi.properties + PCI_PROPERTIES


@pluggable
class VirtioNetPci(VirtioPciProxy):
    model = "virtio-net-pci"
    inner = VirtioNet
    category = "Network"
    description = "Virtio network device (PCI)"
    class_code = 0x020000  # Ethernet controller
    properties = VirtioNet.properties + PCI_PROPERTIES
