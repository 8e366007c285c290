"""Boards declared as data: a CPU spec, where RAM starts, and the devices on the bus.

Layouts and interrupt numbers follow QEMU's `virt` boards (hw/arm/virt.c, hw/riscv/virt.c) so
that firmware and kernels built for QEMU find their devices where they expect them.
"""

from __future__ import annotations

from dataclasses import dataclass

from qemuser.cpu import CPUS, CpuSpec
from qemuser.system.devices import (
    CfiFlash,
    Clint,
    Device,
    GicV2,
    Ns16550,
    Pl011,
    Pl031,
    Plic,
    Psci,
    SifiveTest,
)
from qemuser.system.virtio import VirtioMmio


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
    model: str = ""  # the device tree's model string, when it differs from the description

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
        # pflash bank 1 (U-Boot's environment); bank 0 at 0 holds -bios and is plain memory.
        CfiFlash(base=0x0400_0000, size=0x0400_0000),
        # 32 transports of 0x200 bytes on SPIs 16..47 (hw/arm/virt.c: VIRT_MMIO)
        VirtioMmio(base=0x0A00_0000, count=32, stride=0x200, first_irq=16),
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
        Plic(base=0x0C00_0000, sources=96),
        Ns16550(base=0x1000_0000, irq=10),
        # 8 transports of 0x1000 bytes on PLIC sources 1..8 (hw/riscv/virt.c: VIRT_VIRTIO);
        # QEMU adds their nodes with libfdt, which prepends: the tree lists them downwards.
        VirtioMmio(base=0x1000_1000, count=8, stride=0x1000, first_irq=1, dtb_lowest_first=False),
    ),
    compatible=("riscv-virtio",),
    model="riscv-virtio,qemu",
)

# Per architecture: machine name -> board. The first entry is the default (-M omitted).
BOARDS: dict[str, dict[str, Board]] = {
    "aarch64": {"virt": VIRT_AARCH64},
    "riscv64": {"virt": VIRT_RISCV64},
}
