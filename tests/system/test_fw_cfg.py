"""QEMU's fw_cfg device (MMIO with DMA) as firmware reads it: signature, features, the file
directory, items through the data register and through DMA requests in guest memory."""

from __future__ import annotations

import struct

from qemuser.system.devices.base import NullHost
from qemuser.system.devices.firmware.fw_cfg import (
    DMA_ERROR,
    DMA_READ,
    DMA_SELECT,
    DMA_SIGNATURE,
    DMA_SKIP,
    DMA_WRITE,
    FW_CFG_CMDLINE_DATA,
    FW_CFG_CMDLINE_SIZE,
    FW_CFG_FILE_DIR,
    FW_CFG_ID,
    FW_CFG_KERNEL_SIZE,
    FwCfg,
)
from qemuser.system.virtio.transport import DmaError


class Ram(NullHost):
    def __init__(self) -> None:
        super().__init__()
        self.ram = bytearray(0x10000)

    def dma_read(self, addr: int, size: int) -> bytes:
        if addr + size > len(self.ram):
            raise DmaError("outside RAM")
        return bytes(self.ram[addr : addr + size])

    def dma_write(self, addr: int, data: bytes) -> None:
        self.ram[addr : addr + len(data)] = data


def select(dev: FwCfg, key: int) -> None:
    dev.write(8, 2, int.from_bytes(key.to_bytes(2, "big"), "little"))  # a big-endian register


def stream(dev: FwCfg, count: int) -> bytes:
    return b"".join(dev.read(0, 1).to_bytes(1, "little") for _ in range(count))


def test_signature_features_and_dma_register() -> None:
    dev = FwCfg(base=0x0902_0000)
    select(dev, 0)
    assert stream(dev, 4) == b"QEMU"
    select(dev, FW_CFG_ID)
    assert dev.read(0, 4) == 3  # traditional interface and DMA
    assert dev.read(16, 8).to_bytes(8, "little") == DMA_SIGNATURE.to_bytes(8, "big")


def test_kernel_items_and_file_directory() -> None:
    dev = FwCfg(base=0x0902_0000)
    dev.set_boot(b"\x4d\x5a" + bytes(98), None, "console=ttyAMA0")
    dev.add_file("etc/zzz", b"last")
    dev.add_file("bootorder", b"/virtio-mmio@000000000a003e00\n")
    select(dev, FW_CFG_KERNEL_SIZE)
    assert dev.read(0, 4) == 100
    select(dev, FW_CFG_CMDLINE_SIZE)
    assert dev.read(0, 4) == 16
    select(dev, FW_CFG_CMDLINE_DATA)
    assert dev.read(0, 8).to_bytes(8, "little") == b"console="  # stream order in memory
    select(dev, FW_CFG_FILE_DIR)
    count = struct.unpack(">I", stream(dev, 4))[0]
    entries = [struct.unpack(">IHH56s", stream(dev, 64)) for _ in range(count)]
    assert [(size, name.rstrip(b"\0")) for size, _key, _r, name in entries] == [
        (30, b"bootorder"),
        (4, b"etc/zzz"),
    ]
    assert stream(dev, 2) == b"\0\0"  # past the end


def test_dma_select_skip_read_and_refused_write() -> None:
    host = Ram()
    dev = FwCfg(base=0x0902_0000)
    dev.attach(host)
    dev.add_file("etc/data", bytes(range(32)))
    key = dict(dev.files)["etc/data"]

    def request(control: int, length: int, addr: int) -> int:
        host.ram[0x100:0x110] = struct.pack(">IIQ", control, length, addr)
        dev.write(16, 4, 0)  # high half of the request's address
        dev.write(20, 4, int.from_bytes((0x100).to_bytes(4, "big"), "little"))
        return struct.unpack(">I", host.ram[0x100:0x104])[0]

    assert request(key << 16 | DMA_SELECT | DMA_SKIP, 4, 0) == 0
    assert request(DMA_READ, 8, 0x200) == 0
    assert host.ram[0x200:0x208] == bytes(range(4, 12))
    assert request(DMA_READ, 30, 0x300) == 0
    assert host.ram[0x300:0x31E] == bytes(range(12, 32)) + bytes(10)  # zeros after the end
    assert request(DMA_WRITE, 4, 0x200) == DMA_ERROR
    dev.write(16, 8, int.from_bytes((0xFFFF_0000).to_bytes(8, "big"), "little"))  # not RAM


def test_bootindex_gives_fw_cfg_a_bootorder(tmp_path) -> None:
    from qemuser.cli.system_devices import plan_devices
    from qemuser.system.boards import BOARDS
    from qemuser.system.plug import boot_order_file

    for name in ("a.raw", "b.raw"):
        (tmp_path / name).write_bytes(bytes(4096))
    plan = plan_devices(
        [f"file={tmp_path / 'a.raw'},if=none,id=a,format=raw",
         f"file={tmp_path / 'b.raw'},if=none,id=b,format=raw"],
        [],
        ["virtio-blk-device,drive=a,bootindex=2", "virtio-blk-device,drive=b,id=bdisk,bootindex=1"],
        "virt",
        warn=lambda _text: None,
    )  # fmt: skip
    import copy

    devices = copy.deepcopy(list(BOARDS["aarch64"]["virt"].devices))
    plan.plug_into(devices)
    assert boot_order_file(plan) == (
        b"/virtio-mmio@000000000a003c00/disk@0,0\n/virtio-mmio@000000000a003e00/disk@0,0\0"
    )
