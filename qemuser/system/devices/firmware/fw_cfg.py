"""QEMU's firmware configuration device (fw_cfg), MMIO flavour with DMA, as on the aarch64 virt
board (`qemu,fw-cfg-mmio` at 0x09020000): how EDK2 and U-Boot learn from the emulator what no
device register says, above all the -kernel, -initrd and -append to boot (EDK2's
QemuKernelLoaderFsDxe boots a kernel only this way) and named files such as `bootorder`.

Registers (docs/specs/fw_cfg.rst): data at 0 (a stream of the selected item's bytes, up to 8 at
a time), the selector at 8 (16 bits, big-endian), the DMA address at 16 (64 bits, big-endian;
writing its low half starts the transfer). A DMA request in guest memory is
`{be32 control; be32 length; be64 address}`; control is written back as 0 when done, or with
the error bit. Numeric items are little-endian, the file directory big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node
from qemuser.system.virtio.transport import DmaError

# Item keys (include/standard-headers/linux/qemu_fw_cfg.h).
FW_CFG_SIGNATURE, FW_CFG_ID, FW_CFG_UUID, FW_CFG_RAM_SIZE, FW_CFG_NOGRAPHIC = 0, 1, 2, 3, 4
FW_CFG_NB_CPUS, FW_CFG_MAX_CPUS = 0x05, 0x0F
FW_CFG_KERNEL_ADDR, FW_CFG_KERNEL_SIZE, FW_CFG_KERNEL_CMDLINE = 0x07, 0x08, 0x09
FW_CFG_INITRD_ADDR, FW_CFG_INITRD_SIZE, FW_CFG_BOOT_DEVICE = 0x0A, 0x0B, 0x0C
FW_CFG_KERNEL_ENTRY, FW_CFG_KERNEL_DATA, FW_CFG_INITRD_DATA = 0x10, 0x11, 0x12
FW_CFG_CMDLINE_ADDR, FW_CFG_CMDLINE_SIZE, FW_CFG_CMDLINE_DATA = 0x13, 0x14, 0x15
FW_CFG_SETUP_ADDR, FW_CFG_SETUP_SIZE, FW_CFG_SETUP_DATA = 0x16, 0x17, 0x18
FW_CFG_FILE_DIR, FW_CFG_FILE_FIRST = 0x19, 0x20

ID_TRADITIONAL, ID_DMA = 1, 2
DMA_ERROR, DMA_READ, DMA_SKIP, DMA_SELECT, DMA_WRITE = 0x01, 0x02, 0x04, 0x08, 0x10
DMA_SIGNATURE = 0x51454D5520434647  # "QEMU CFG", what the DMA register reads as
_DMA_REQUEST = struct.Struct(">IIQ")
FILE_NAME_MAX = 56


def _le32(value: int) -> bytes:
    return struct.pack("<I", value)


@board_device
@dataclass
class FwCfg(Device):
    """The fw_cfg items and the selected one's read position."""

    kind: ClassVar[str] = "fw_cfg_mem"
    description: ClassVar[str] = "QEMU firmware configuration (MMIO, DMA)"
    size: int = 0x18
    items: dict[int, bytes] = field(default_factory=dict)
    files: list[tuple[str, int]] = field(default_factory=list)  # (name, key) in order
    selected: int = 0
    offset: int = 0
    dma_high: int = 0  # the DMA address's upper half, written first

    def __post_init__(self) -> None:
        self.items.setdefault(FW_CFG_SIGNATURE, b"QEMU")
        self.items.setdefault(FW_CFG_ID, _le32(ID_TRADITIONAL | ID_DMA))
        self._update_directory()

    # --- contents (the machine fills them before the guest starts) --------------------------
    def add(self, key: int, data: bytes) -> None:
        self.items[key] = bytes(data)

    def add_file(self, name: str, data: bytes) -> None:
        if len(name.encode()) >= FILE_NAME_MAX:
            raise ValueError(f"fw_cfg file name too long: {name}")
        existing = dict(self.files)
        key = existing.get(name, FW_CFG_FILE_FIRST + len(self.files))
        if name not in existing:
            self.files.append((name, key))
        self.items[key] = bytes(data)
        self._update_directory()

    def set_boot(self, kernel: bytes | None, initrd: bytes | None, cmdline: str) -> None:
        """-kernel/-initrd/-append as QEMU's arm boot code hands them to firmware."""
        if kernel is not None:
            self.add(FW_CFG_KERNEL_SIZE, _le32(len(kernel)))
            self.add(FW_CFG_KERNEL_DATA, kernel)
            self.add(FW_CFG_SETUP_SIZE, _le32(0))
            self.add(FW_CFG_SETUP_DATA, b"")
        if initrd is not None:
            self.add(FW_CFG_INITRD_SIZE, _le32(len(initrd)))
            self.add(FW_CFG_INITRD_DATA, initrd)
        if kernel is not None:
            text = cmdline.encode() + b"\0"
            self.add(FW_CFG_CMDLINE_SIZE, _le32(len(text)))
            self.add(FW_CFG_CMDLINE_DATA, text)

    def _update_directory(self) -> None:
        entries = b"".join(
            struct.pack(">IHH", len(self.items.get(key, b"")), key, 0)
            + name.encode().ljust(FILE_NAME_MAX, b"\0")
            for name, key in sorted(self.files)  # QEMU keeps the directory sorted by name
        )
        self.items[FW_CFG_FILE_DIR] = struct.pack(">I", len(self.files)) + entries

    # --- registers --------------------------------------------------------------------------
    def _select(self, key: int) -> None:
        self.selected = key
        self.offset = 0

    def _take(self, count: int) -> bytes:
        data = self.items.get(self.selected, b"")
        chunk = data[self.offset : self.offset + count]
        self.offset += count
        return chunk.ljust(count, b"\0")  # past the end: zeros, as QEMU's

    def read(self, offset: int, size: int) -> int:
        if offset < 8:
            return int.from_bytes(self._take(size), "little")  # stream order in memory
        if 16 <= offset < 24:
            data = DMA_SIGNATURE.to_bytes(8, "big")[offset - 16 : offset - 16 + size]
            return int.from_bytes(data, "little")
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        raw = value.to_bytes(size, "little")  # the bytes as the guest stored them
        if offset == 8 and size == 2:
            self._select(int.from_bytes(raw, "big"))
        elif offset == 16 and size == 8:
            self._dma(int.from_bytes(raw, "big"))
        elif offset == 16 and size == 4:
            self.dma_high = int.from_bytes(raw, "big")
        elif offset == 20 and size == 4:
            self._dma(self.dma_high << 32 | int.from_bytes(raw, "big"))
            self.dma_high = 0

    def _dma(self, request_addr: int) -> None:
        host = self.host
        try:
            control, length, addr = _DMA_REQUEST.unpack(
                host.dma_read(request_addr, _DMA_REQUEST.size)  # type: ignore[attr-defined]
            )
            if control & DMA_SELECT:
                self._select(control >> 16)
            status = 0
            if control & DMA_READ:
                host.dma_write(addr, self._take(length))  # type: ignore[attr-defined]
            elif control & DMA_SKIP:
                self.offset += length
            elif control & DMA_WRITE:
                status = DMA_ERROR  # no item here is writable
            host.dma_write(request_addr, struct.pack(">I", status))  # type: ignore[attr-defined]
        except DmaError:  # the request is not in RAM: there is nowhere to report the error
            return

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        root.child(
            self.node_name("fw-cfg"),
            dma_coherent=None,
            reg=self.reg(),
            compatible="qemu,fw-cfg-mmio",
        )
