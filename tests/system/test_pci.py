"""The PCIe host bridge and virtio-pci, driven as a guest's PCI code drives them (no CPU):
enumeration through ECAM, BAR sizing and assignment, the capability list, a virtio device set up
through the common configuration, a request served through the notify area, INTx on the
swizzled line and the ISR's read-to-clear."""

from __future__ import annotations

import struct

from qemuser.system.devices.base import FdtContext, NullHost
from qemuser.system.fdt import Node
from qemuser.system.pci.host import GpexHost
from qemuser.system.virtio.pci import VirtioRngPci
from qemuser.system.virtio.rng import VirtioRng

RAM_BASE = 0x4000_0000


class Machine(NullHost):
    """RAM for DMA and a record of interrupt lines."""

    def __init__(self) -> None:
        super().__init__()
        self.ram = bytearray(1 << 20)

    def dma_read(self, guest_addr: int, size: int) -> bytes:
        offset = guest_addr - RAM_BASE
        return bytes(self.ram[offset : offset + size])

    def dma_write(self, guest_addr: int, data: bytes) -> None:
        offset = guest_addr - RAM_BASE
        self.ram[offset : offset + len(data)] = data


def ecam(slot: int, reg: int) -> int:
    return (slot << 15) | reg


def bridge() -> tuple[GpexHost, Machine]:
    host = GpexHost(base=0x40_1000_0000)
    machine = Machine()
    host.attach(machine)
    return host, machine


def test_enumeration_sees_the_host_bridge_and_nothing_else():
    host, _ = bridge()
    assert host.ecam_read(ecam(0, 0), 4) == 0x0008_1B36
    assert host.ecam_read(ecam(0, 0x08), 4) >> 8 == 0x060000  # host bridge class
    assert host.ecam_read(ecam(1, 0), 4) == 0xFFFF_FFFF  # empty slot: master abort
    assert host.ecam_read(ecam(0, 0) | (1 << 20), 4) == 0xFFFF_FFFF  # no bus 1


def test_virtio_rng_pci_is_a_modern_virtio_device():
    host, machine = bridge()
    proxy = VirtioRngPci(VirtioRng(), None)
    host.plug(proxy)
    assert host.ecam_read(ecam(1, 0), 4) == 0x1044_1AF4  # 0x1040 + device id 4
    assert host.ecam_read(ecam(1, 0x08), 1) == 1  # revision 1: modern only
    assert host.ecam_read(ecam(1, 0x2C), 4) == 0x1100_1AF4
    assert host.ecam_read(ecam(1, 0x06), 2) & 0x10  # capability list present
    assert host.ecam_read(ecam(1, 0x3D), 1) == 1  # INTA#
    # walk the vendor capabilities as Linux's virtio_pci_modern does
    found = {}
    pointer = host.ecam_read(ecam(1, 0x34), 1)
    while pointer:
        cap_id, nxt, _len, cfg_type, bar = (
            host.ecam_read(ecam(1, pointer + i), 1) for i in range(5)
        )
        offset = host.ecam_read(ecam(1, pointer + 8), 4)
        assert cap_id == 0x09 and bar == 4
        found[cfg_type] = offset
        pointer = nxt
    assert found == {1: 0x0000, 3: 0x1000, 4: 0x2000, 2: 0x3000}


def test_bar_sizing_assignment_and_a_served_request():
    host, machine = bridge()
    host.plug(VirtioRngPci(VirtioRng(), None))
    # size BAR4 (64-bit): all ones to both halves, read back the mask
    host.ecam_write(ecam(1, 0x20), 4, 0xFFFF_FFFF)
    host.ecam_write(ecam(1, 0x24), 4, 0xFFFF_FFFF)
    low, high = host.ecam_read(ecam(1, 0x20), 4), host.ecam_read(ecam(1, 0x24), 4)
    size = ((~((high << 32) | (low & ~0xF))) & 0xFFFF_FFFF_FFFF_FFFF) + 1
    assert size == 0x4000 and low & 0xF == 0xC  # 64-bit, prefetchable
    bar = 0x1000_0000
    host.ecam_write(ecam(1, 0x20), 4, bar)
    host.ecam_write(ecam(1, 0x24), 4, 0)
    window_read, window_write = host.windows()[1][2], host.windows()[1][3]
    assert window_read(0, 4) == 0xFFFF_FFFF  # memory decoding still off
    host.ecam_write(ecam(1, 0x04), 2, 0x0006)  # memory space + bus master
    common = bar - 0x1000_0000

    def cfg_write(offset: int, size: int, value: int) -> None:
        window_write(common + offset, size, value)

    def cfg_read(offset: int, size: int) -> int:
        return window_read(common + offset, size)

    assert cfg_read(0x12, 2) == 1  # one queue
    assert cfg_read(0x10, 2) == 0xFFFF  # no MSI-X vector
    cfg_write(0x14, 1, 1 | 2)  # ACKNOWLEDGE | DRIVER
    cfg_write(0x00, 4, 1)
    assert cfg_read(0x04, 4) & 1  # VERSION_1 offered in the high word
    cfg_write(0x08, 4, 1)
    cfg_write(0x0C, 4, 1)  # accept VERSION_1
    cfg_write(0x14, 1, 1 | 2 | 8)
    assert cfg_read(0x14, 1) & 8  # FEATURES_OK kept
    cfg_write(0x16, 2, 0)
    assert cfg_read(0x18, 2) == 1024
    cfg_write(0x18, 2, 8)
    desc, avail, used = RAM_BASE, RAM_BASE + 0x1000, RAM_BASE + 0x2000
    cfg_write(0x20, 8, desc)
    cfg_write(0x28, 4, avail)
    cfg_write(0x2C, 4, 0)
    cfg_write(0x30, 8, used)
    cfg_write(0x1C, 2, 1)
    cfg_write(0x14, 1, 1 | 2 | 4 | 8)
    # one 16-byte device-writable buffer
    machine.dma_write(desc, struct.pack("<QIHH", RAM_BASE + 0x3000, 16, 2, 0))
    machine.dma_write(avail, struct.pack("<HHH", 0, 1, 0))
    notify_off = cfg_read(0x1E, 2)
    window_write(common + 0x3000 + 4 * notify_off, 2, 0)
    used_idx, used_id, used_len = struct.unpack_from("<xxHII", machine.dma_read(used, 12))
    assert (used_idx, used_id, used_len) == (1, 0, 16)
    assert machine.dma_read(RAM_BASE + 0x3000, 16) != bytes(16)
    line = host.intx_line(1, 1)
    assert line == 4 and machine.irqs[line] is True  # slot 1, INTA -> SPI 4
    assert window_read(common + 0x1000, 1) == 1  # ISR: used buffer ...
    assert machine.irqs[line] is False  # ... and reading it deasserted the line
    assert window_read(common + 0x1000, 1) == 0


def test_intx_disable_masks_the_line():
    host, machine = bridge()
    proxy = VirtioRngPci(VirtioRng(), None)
    host.plug(proxy)
    host.ecam_write(ecam(1, 0x04), 2, 0x0400)
    proxy.function.set_intx(True)
    assert machine.irqs.get(4) in (None, False)
    assert host.ecam_read(ecam(1, 0x06), 2) & 0x08  # the status still shows it pending
    host.ecam_write(ecam(1, 0x04), 2, 0)
    assert machine.irqs[4] is True


def test_device_tree_node_as_qemus():
    host = GpexHost(base=0x40_1000_0000)
    root = Node("")
    host.fdt(root, FdtContext(interrupt_parent=0x8002, clock=0x8000, gic=True))
    node = root.children[0]
    assert node.name == "pcie@10000000"
    assert node.props["reg"] == [0x40, 0x1000_0000, 0, 0x1000_0000]
    # QEMU 7.2's dumpdtb of -M virt: the same windows and the same first interrupt-map rows
    assert node.props["ranges"] == [
        0x1000000, 0, 0, 0, 0x3EFF0000, 0, 0x10000,
        0x2000000, 0, 0x10000000, 0, 0x10000000, 0, 0x2EFF0000,
        0x3000000, 0x80, 0, 0x80, 0, 0x80, 0,
    ]  # fmt: skip
    assert node.props["interrupt-map"][:20] == [
        0, 0, 0, 1, 0x8002, 0, 0, 0, 3, 4,
        0, 0, 0, 2, 0x8002, 0, 0, 0, 4, 4,
    ]  # fmt: skip
    riscv = GpexHost(base=0x3000_0000, mmio32=(0x4000_0000, 0x4000_0000), pio=(0x300_0000, 0x10000),
                     mmio64=(0x4_0000_0000, 0x4_0000_0000), irqs=(32, 33, 34, 35), node="pci",
                     unit_is_ecam=True)  # fmt: skip
    root = Node("")
    riscv.fdt(root, FdtContext(interrupt_parent=3, clock=0, gic=False))
    node = root.children[0]
    assert node.name == "pci@30000000"
    assert node.props["interrupt-map"][:12] == [0, 0, 0, 1, 3, 0x20, 0, 0, 0, 2, 3, 0x21]
    assert node.props["ranges"][7:14] == [0x2000000, 0, 0x40000000, 0, 0x40000000, 0, 0x40000000]
