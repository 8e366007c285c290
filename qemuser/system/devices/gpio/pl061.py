"""ARM PL061 GPIO controller with the virt board's power button on line 3, as QEMU's virt
(hw/gpio/pl061.c, hw/arm/virt.c create_gpio_keys): system_powerdown pulses that line for
100 ms, and the guest's gpio-keys driver reports KEY_POWER.

Registers (ARM DDI 0190): GPIODATA at 0x000-0x3FC (address bits 9:2 select the bits a
read or write touches), direction, interrupt sense/both-edges/event, mask, raw and masked
status, clear; the PrimeCell ids at 0xFE0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node

DIR, IS, IBE, IEV, IE, RIS, MIS, IC, AFSEL = (
    0x400, 0x404, 0x408, 0x40C, 0x410, 0x414, 0x418, 0x41C, 0x420,
)  # fmt: skip
POWER_LINE = 3  # the gpio-keys poweroff key (QEMU's GPIO_KEY_POWER wiring)
KEY_POWER = 116  # linux,code (input-event-codes.h)


@board_device
@dataclass
class Pl061(Device):
    kind: ClassVar[str] = "pl061"
    description: ClassVar[str] = "ARM PL061 GPIO controller (power button on line 3)"
    irq: int = 7
    data: int = 0  # output latch
    inputs: int = 0  # levels driven from outside (the power button)
    direction: int = 0  # 1: output
    sense: int = 0  # 1: level
    both: int = 0
    event: int = 0  # 1: rising edge / high level
    mask: int = 0
    raw: int = 0
    phandle: int = 0
    _IDS: ClassVar[tuple[int, ...]] = (0x61, 0x10, 0x04, 0x00, 0x0D, 0xF0, 0x05, 0xB1)

    def _levels(self) -> int:
        return (self.data & self.direction) | (self.inputs & ~self.direction & 0xFF)

    def _update(self) -> None:
        level = self.sense & ~(self._levels() ^ self.event) & 0xFF  # level-sensitive lines
        self.raw = (self.raw & ~self.sense) | level
        self.host.set_irq(self.irq, bool(self.raw & self.mask))

    def set_input(self, line: int, high: bool) -> None:
        """An external level change on `line` (edge detection as the PL061 does it)."""
        before = self._levels()
        bit = 1 << line
        self.inputs = (self.inputs | bit) if high else (self.inputs & ~bit)
        changed = (before ^ self._levels()) & ~self.sense & ~self.direction & 0xFF
        rising = changed & self._levels()
        edges = (changed & self.both) | (rising & self.event & ~self.both)
        edges |= changed & ~rising & ~self.event & ~self.both
        self.raw |= edges
        self._update()

    def read(self, offset: int, size: int) -> int:
        if offset < 0x400:
            return self._levels() & (offset >> 2) & 0xFF
        if 0xFE0 <= offset < 0x1000:
            return self._IDS[(offset - 0xFE0) // 4]
        return {
            DIR: self.direction, IS: self.sense, IBE: self.both, IEV: self.event, IE: self.mask,
            RIS: self.raw, MIS: self.raw & self.mask, AFSEL: 0,
        }.get(offset, 0)  # fmt: skip

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset < 0x400:
            bits = (offset >> 2) & 0xFF
            self.data = (self.data & ~bits) | (value & bits)
        elif offset == DIR:
            self.direction = value
        elif offset == IS:
            self.sense = value
        elif offset == IBE:
            self.both = value
        elif offset == IEV:
            self.event = value
        elif offset == IE:
            self.mask = value
        elif offset == IC:
            self.raw &= ~value
        self._update()

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        self.phandle = ctx.phandle()
        root.child(
            self.node_name("pl061"),
            phandle=self.phandle,
            clock_names="apb_pclk",
            clocks=[ctx.clock],
            interrupts=ctx.interrupts(self.irq),
            gpio_controller=None,
            **{"#gpio-cells": 2},
            compatible=["arm,pl061", "arm,primecell"],
            reg=self.reg(),
        )
        keys = (ctx.root or root).child("gpio-keys", compatible="gpio-keys")
        keys.child(
            "poweroff",
            gpios=[self.phandle, POWER_LINE, 0],
            linux__code=KEY_POWER,
            label="GPIO Key Poweroff",
        )
