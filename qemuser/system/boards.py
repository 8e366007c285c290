"""Boards declared as data: a platform (the architecture's CPU side), where RAM starts, the
devices on the bus, and which of them are the interrupt controller, the console, the timer the
core reads and the firmware interface it calls.

Layouts and interrupt numbers follow QEMU's `virt` boards (hw/arm/virt.c, hw/riscv/virt.c) so
that firmware and kernels built for QEMU find their devices where they expect them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qemuser.cpu import CpuSpec
from qemuser.system.arch.aarch64 import AARCH64, AARCH64_EL2, AARCH64_GICV3
from qemuser.system.arch.common import CorePlatform
from qemuser.system.arch.riscv64 import RISCV64
from qemuser.system.devices.base import Device
from qemuser.system.devices.char.ns16550 import Ns16550
from qemuser.system.devices.char.pl011 import Pl011
from qemuser.system.devices.firmware.fw_cfg import FwCfg
from qemuser.system.devices.firmware.psci import Psci
from qemuser.system.devices.flash.cfi import CfiFlash
from qemuser.system.devices.gpio.pl061 import Pl061
from qemuser.system.devices.intc.clint import Clint
from qemuser.system.devices.intc.gicv2 import GicV2
from qemuser.system.devices.intc.gicv3 import GicV3
from qemuser.system.devices.intc.plic import Plic
from qemuser.system.devices.misc.sifive_test import SifiveTest
from qemuser.system.devices.rtc.goldfish import GoldfishRtc
from qemuser.system.devices.rtc.pl031 import Pl031
from qemuser.system.pci.host import GpexHost
from qemuser.system.virtio.transport import VirtioMmio


@dataclass(frozen=True)
class Board:
    """A board. `intc`, `console`, `timer` and `firmware` are members of `devices` (the same
    objects), named so that the machine and the platform need not search for them."""

    name: str
    description: str
    platform: CorePlatform
    ram_base: int
    devices: tuple[Device, ...]
    intc: Device  # the interrupt controller board lines go to (an InterruptController)
    compatible: tuple[str, ...]
    console: Device | None = None  # the serial port the console's input reaches (a SerialPort)
    timer: Device | None = None  # a timer device the core reads (riscv: the CLINT)
    firmware: Device | None = None  # a firmware interface the core calls (aarch64: PSCI)
    cpus: int = 1  # vCPUs the machine creates (QEMU's -smp default)
    default_ram: int = 128 << 20  # QEMU's default -m
    max_ram: int = 255 << 30
    model: str = ""  # the device tree's model string, when it differs from the description
    flash_size: int = 0  # pflash bank 0, where -bios goes (0: firmware is loaded into RAM)

    def __post_init__(self) -> None:
        for role in (self.intc, self.console, self.timer, self.firmware):
            if role is not None and not any(role is d for d in self.devices):
                raise ValueError(f"{self.name}: {role.kind} is not one of the board's devices")

    @property
    def cpu(self) -> CpuSpec:
        return self.platform.cpu

    def check_layout(self, ram_size: int) -> None:
        """Raise ValueError when two windows (devices or RAM) overlap."""
        windows = [("ram", self.ram_base, ram_size)]
        windows += [(d.kind, base, size) for d in self.devices for base, size, *_ in d.windows()]
        windows.sort(key=lambda w: w[1])
        for (name_a, base_a, size_a), (name_b, base_b, _) in zip(windows, windows[1:]):
            if base_a + size_a > base_b:
                raise ValueError(f"{name_a} overlaps {name_b}")


_GIC = GicV2(base=0x0800_0000, cpu_base=0x0801_0000)
_PL011 = Pl011(base=0x0900_0000, irq=1)
_PSCI = Psci(method="hvc")

VIRT_AARCH64 = Board(
    name="virt",
    description="QEMU 7.2 ARM Virtual Machine",
    platform=AARCH64,
    ram_base=0x4000_0000,
    devices=(
        _GIC,
        _PL011,
        Pl031(base=0x0901_0000, irq=2),
        FwCfg(base=0x0902_0000),  # hw/arm/virt.c: VIRT_FW_CFG
        Pl061(base=0x0903_0000, irq=7),  # VIRT_GPIO, with the power button (gpio-keys)
        _PSCI,
        # pflash bank 1 (EDK2's variables, U-Boot's environment) as QEMU's: two interleaved
        # x16 chips on a 32-bit bus; bank 0 at 0 holds -bios and is plain memory (cfi.py).
        CfiFlash(base=0x0400_0000, size=0x0400_0000),
        # 32 transports of 0x200 bytes on SPIs 16..47 (hw/arm/virt.c: VIRT_MMIO)
        VirtioMmio(base=0x0A00_0000, count=32, stride=0x200, first_irq=16),
        # PCIe: ECAM in high memory (VIRT_HIGH_PCIE_ECAM), the 32-bit, I/O and 64-bit windows,
        # INTA..INTD on SPIs 3..6 (hw/arm/virt.c)
        GpexHost(base=0x40_1000_0000),
    ),
    intc=_GIC,
    console=_PL011,
    firmware=_PSCI,
    compatible=("linux,dummy-virt",),
    model="linux,dummy-virt",  # QEMU's tree says so (Linux: "Machine model: linux,dummy-virt")
    flash_size=64 << 20,
)


def virt_aarch64_el2() -> Board:
    """`-M virt,virtualization=on`: the same board with its CPUs starting at EL2 and PSCI over
    SMC (hw/arm/virt.c: the conduit is SMC once the guest owns EL2's HVC). QEMU also gives the
    GIC its virtualization extensions (GICH, GICV, maintenance PPI 9); this GICv2 has none, so
    the tree does not claim them."""
    psci = Psci(method="smc")
    devices = tuple(psci if d is _PSCI else d for d in VIRT_AARCH64.devices)
    return replace(VIRT_AARCH64, platform=AARCH64_EL2, devices=devices, firmware=psci)


def virt_aarch64_gicv3() -> Board:
    """`-M virt,gic-version=3`: the same board with a GICv3 (distributor at the GICv2's
    address, redistributors at 0x080A0000) and without the ITS (as QEMU's its=off)."""
    gic = GicV3(base=0x0800_0000, lines=256)  # measured: QEMU 7.2 reports 224 SPIs
    devices = tuple(gic if d is _GIC else d for d in VIRT_AARCH64.devices)
    return replace(VIRT_AARCH64, platform=AARCH64_GICV3, devices=devices, intc=gic)


_CLINT = Clint(base=0x0200_0000)
_PLIC = Plic(base=0x0C00_0000, sources=96)
_UART = Ns16550(base=0x1000_0000, irq=10)

VIRT_RISCV64 = Board(
    name="virt",
    description="RISC-V VirtIO board",
    platform=RISCV64,
    ram_base=0x8000_0000,
    devices=(
        SifiveTest(base=0x0010_0000),
        GoldfishRtc(base=0x0010_1000, irq=11),  # hw/riscv/virt.c: VIRT_RTC, RTC_IRQ
        _CLINT,
        _PLIC,
        _UART,
        # 8 transports of 0x1000 bytes on PLIC sources 1..8 (hw/riscv/virt.c: VIRT_VIRTIO);
        # QEMU adds their nodes with libfdt, which prepends: the tree lists them downwards.
        VirtioMmio(base=0x1000_1000, count=8, stride=0x1000, first_irq=1, dtb_lowest_first=False),
        # PCIe (hw/riscv/virt.c: VIRT_PCIE_ECAM/MMIO/PIO, the high window for 512 MiB-16 GiB
        # of RAM), INTA..INTD on PLIC sources 32..35
        GpexHost(
            base=0x3000_0000,
            mmio32=(0x4000_0000, 0x4000_0000),
            pio=(0x0300_0000, 0x1_0000),
            mmio64=(0x4_0000_0000, 0x4_0000_0000),
            irqs=(32, 33, 34, 35),
            node="pci",
            unit_is_ecam=True,
        ),
    ),
    intc=_PLIC,
    console=_UART,
    timer=_CLINT,
    compatible=("riscv-virtio",),
    model="riscv-virtio,qemu",
)

# Per architecture: machine name -> board. The first entry is the default (-M omitted).
BOARDS: dict[str, dict[str, Board]] = {
    "aarch64": {"virt": VIRT_AARCH64},
    "riscv64": {"virt": VIRT_RISCV64},
}
