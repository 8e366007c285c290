"""Boards declared as data: a CPU spec, where RAM starts, and the devices on the bus.

Layouts and interrupt numbers follow QEMU's `virt` boards (hw/arm/virt.c, hw/riscv/virt.c) so
that firmware and kernels built for QEMU find their devices where they expect them.
"""

from __future__ import annotations

from dataclasses import dataclass

from qemuser.cpu import CPUS, CpuSpec
from qemuser.system.devices import Clint, Device, GicV2, Ns16550, Pl011, Pl031, Psci, SifiveTest


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    cpu: CpuSpec
    ram_base: int
    devices: tuple[Device, ...]
    compatible: tuple[str, ...]
    default_ram: int = 128 << 20  # QEMU's default -m
    max_ram: int = 255 << 30

    def check_layout(self, ram_size: int) -> None:
        """Raise ValueError when two windows (devices or RAM) overlap."""
        windows = [("ram", self.ram_base, ram_size)]
        windows += [(d.kind, base, size) for d in self.devices for base, size, *_ in d.windows()]
        windows.sort(key=lambda w: w[1])
        for (name_a, base_a, size_a), (name_b, base_b, _) in zip(windows, windows[1:]):
            if base_a + size_a > base_b:
                raise ValueError(f"{name_a} overlaps {name_b}")


VIRT_AARCH64 = Board(
    name="virt",
    description="QEMU 'virt' generic virtual platform (aarch64)",
    cpu=CPUS["aarch64"],
    ram_base=0x4000_0000,
    devices=(
        GicV2(base=0x0800_0000, cpu_base=0x0801_0000),
        Pl011(base=0x0900_0000, irq=1),
        Pl031(base=0x0901_0000, irq=2),
        Psci(method="hvc"),
    ),
    compatible=("linux,dummy-virt",),
)

VIRT_RISCV64 = Board(
    name="virt",
    description="RISC-V VirtIO board",
    cpu=CPUS["riscv64"],
    ram_base=0x8000_0000,
    devices=(
        SifiveTest(base=0x0010_0000),
        Clint(base=0x0200_0000),
        Ns16550(base=0x1000_0000, irq=10),
    ),
    compatible=("riscv-virtio",),
)

# Per architecture: machine name -> board. The first entry is the default (-M omitted).
BOARDS: dict[str, dict[str, Board]] = {
    "aarch64": {"virt": VIRT_AARCH64},
    "riscv64": {"virt": VIRT_RISCV64},
}
