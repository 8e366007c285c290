"""The virt boards' PCI Express host bridge: QEMU's "gpex" (generic ECAM), the node Linux's
pci-host-generic and EDK2's PciHostBridgeDxe find in the device tree.

Configuration space is memory-mapped (ECAM: bus << 20 | device << 15 | function << 12 | offset);
the bridge forwards memory and I/O accesses in its windows to the BAR that claims them; INTx of
slot S, pin P reaches board line irqs[(S + P - 1) % 4], the swizzle the device tree's
interrupt-map spells out (QEMU's create_pcie_irq_map).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from qemuser.system.devices.base import Access, Device, DeviceHost, FdtContext, Store
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node, u64_cells
from qemuser.system.pci.function import PciFunction

SLOTS = 32
# The host bridge's own function at 00.0 (QEMU's gpex-root: Red Hat, QEMU PCIe host bridge).
HOST_VENDOR, HOST_DEVICE, HOST_CLASS = 0x1B36, 0x0008, 0x060000

# PCI address space codes of the device tree's `ranges` (IEEE 1275 PCI binding).
SPACE_IO, SPACE_MEM32, SPACE_MEM64 = 0x0100_0000, 0x0200_0000, 0x0300_0000


class PciDevice(Protocol):
    """What the bridge plugs: something that is (or has) a PCI function."""

    def pci_function(self) -> PciFunction: ...


@board_device
@dataclass
class GpexHost(Device):
    kind: ClassVar[str] = "gpex-pcihost"
    description: ClassVar[str] = "PCI Express generic ECAM host bridge"
    provides_bus: ClassVar[str] = "PCI"
    ecam_size: int = 0x1000_0000  # 256 buses
    mmio32: tuple[int, int] = (0x1000_0000, 0x2EFF_0000)  # (base, size)
    pio: tuple[int, int] = (0x3EFF_0000, 0x1_0000)
    mmio64: tuple[int, int] = (0x80_0000_0000, 0x80_0000_0000)
    irqs: tuple[int, int, int, int] = (3, 4, 5, 6)  # board lines of INTA..INTD at slot 0
    node: str = "pcie"  # QEMU names the node pcie@ on arm, pci@ on riscv
    unit_is_ecam: bool = False
    functions: dict[int, PciFunction] = field(default_factory=dict, repr=False)
    _line_levels: dict[int, set[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.size = self.ecam_size
        self.functions[0] = PciFunction(HOST_VENDOR, HOST_DEVICE, HOST_CLASS, interrupt_pin=0)

    # --- plugging ---
    def plug(self, device: object) -> PciFunction:
        """Put `device` in the lowest free slot (or the one its `addr` asked for)."""
        function = device.pci_function()  # type: ignore[attr-defined]
        wanted = getattr(device, "pci_slot", None)
        slots = [wanted] if wanted is not None else range(1, SLOTS)
        for slot in slots:
            if slot not in self.functions:
                self._wire(slot, function)
                return function
        if wanted is not None:
            raise ValueError(f"PCI: slot {wanted} function 0 already occupied")
        raise ValueError("PCI: no free slot")

    def _wire(self, slot: int, function: PciFunction) -> None:
        self.functions[slot] = function
        pin = function.config[0x3D]
        if pin:
            line = self.intx_line(slot, pin)

            def set_line(level: bool, slot: int = slot, line: int = line) -> None:
                asserted = self._line_levels.setdefault(line, set())
                was = bool(asserted)
                if level:
                    asserted.add(slot)
                else:
                    asserted.discard(slot)
                if bool(asserted) != was:
                    self.host.set_irq(line, bool(asserted))

            function.set_intx_line = set_line
        attach = getattr(function, "attach", None)
        if attach is not None:
            attach(self.host)

    def attach(self, host: DeviceHost) -> None:
        super().attach(host)
        for function in self.functions.values():
            attach = getattr(function, "attach", None)
            if attach is not None:
                attach(host)

    def intx_line(self, slot: int, pin: int) -> int:
        return self.irqs[(slot + pin - 1) % 4]

    def plugged(self) -> list[tuple[int, PciFunction]]:
        return sorted(self.functions.items())

    # --- windows ---
    def windows(self) -> list[tuple[int, int, Access, Store]]:
        found = [(self.base, self.ecam_size, self.ecam_read, self.ecam_write)]
        for (base, size), io in ((self.mmio32, False), (self.pio, True), (self.mmio64, False)):
            if size:
                found.append(
                    (base, size, self._window_read(base, io), self._window_write(base, io))
                )
        return found

    def _function_at(self, offset: int) -> tuple[PciFunction | None, int]:
        bus, devfn, reg = offset >> 20, (offset >> 12) & 0xFF, offset & 0xFFF
        if bus != 0 or devfn & 7:
            return None, reg  # one bus, single-function devices
        return self.functions.get(devfn >> 3), reg

    def ecam_read(self, offset: int, size: int) -> int:
        function, reg = self._function_at(offset)
        if function is None:
            return (1 << (8 * size)) - 1  # no device: all ones (master abort)
        return function.config_read(reg, size)

    def ecam_write(self, offset: int, size: int, value: int) -> None:
        function, reg = self._function_at(offset)
        if function is not None:
            function.config_write(reg, size, value)

    def _decode(self, address: int, io: bool) -> tuple[PciFunction, int, int] | None:
        for function in self.functions.values():
            hit = function.decoded_bar(address, io)
            if hit is not None:
                return function, hit[0], hit[1]
        return None

    def _window_read(self, window_base: int, io: bool) -> Access:
        # BAR addresses are bus addresses: the windows map them 1:1 except I/O, which starts
        # at bus address 0 (the `ranges` below say so).
        bus_base = 0 if io else window_base

        def read(offset: int, size: int) -> int:
            hit = self._decode(bus_base + offset, io)
            if hit is None:
                return (1 << (8 * size)) - 1
            function, index, bar_offset = hit
            return function.bar_read(index, bar_offset, size)

        return read

    def _window_write(self, window_base: int, io: bool) -> Store:
        bus_base = 0 if io else window_base

        def write(offset: int, size: int, value: int) -> None:
            hit = self._decode(bus_base + offset, io)
            if hit is not None:
                function, index, bar_offset = hit
                function.bar_write(index, bar_offset, size, value)

        return write

    # --- device tree ---
    def fdt(self, root: Node, ctx: FdtContext) -> None:
        ranges: list[int] = []
        for space, (base, size) in (
            (SPACE_IO, self.pio),
            (SPACE_MEM32, self.mmio32),
            (SPACE_MEM64, self.mmio64),
        ):
            if size:
                bus_address = 0 if space == SPACE_IO else base
                ranges += [space, *u64_cells(bus_address), *u64_cells(base), *u64_cells(size)]
        interrupt_map: list[int] = []
        for slot in range(4):
            for pin in range(1, 5):
                parent = ctx.interrupts(self.intx_line(slot, pin))
                parent_address = [0, 0] if ctx.gic else []  # the GIC's #address-cells is 2
                interrupt_map += [slot << 11, 0, 0, pin, ctx.interrupt_parent, *parent_address]
                interrupt_map += parent
        # QEMU names the node after the 32-bit window on arm, after the ECAM on riscv.
        unit = self.base if self.unit_is_ecam else self.mmio32[0]
        name = f"{self.node}@{unit:x}"
        props: dict = {
            "interrupt_map_mask": [0x1800, 0, 0, 7],
            "interrupt_map": interrupt_map,
            "#interrupt-cells": 1,
            "ranges": ranges,
            "reg": u64_cells(self.base) + u64_cells(self.ecam_size),
            "dma_coherent": None,
            "bus_range": [0, 0xFF],
            "linux,pci-domain": 0,
            "#size-cells": 2,
            "#address-cells": 3,
            "device_type": "pci",
            "compatible": "pci-host-ecam-generic",
        }
        root.child(name, **props)
