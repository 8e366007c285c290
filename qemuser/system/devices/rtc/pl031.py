"""ARM PrimeCell real-time clock (PL031)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node


@board_device
@dataclass
class Pl031(Device):
    """ARM PL031 real-time clock: the data register reads host wall-clock seconds."""

    kind: ClassVar[str] = "pl031"
    description: ClassVar[str] = "ARM PL031 RTC"
    irq: int = 2
    load_offset: int = 0  # guest-set time minus host time, in seconds
    _IDS: ClassVar[tuple[int, ...]] = (0x31, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1)

    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return (int(time.time()) + self.load_offset) & 0xFFFF_FFFF
        if 0xFE0 <= offset < 0x1000:
            return self._IDS[(offset - 0xFE0) // 4]
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0x8:  # LR: set the clock
            self.load_offset = value - int(time.time())

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        root.child(
            self.node_name("pl031"),
            compatible=["arm,pl031", "arm,primecell"],
            reg=self.reg(),
            interrupts=ctx.interrupts(self.irq),
            clock_names="apb_pclk",
            clocks=[ctx.clock],
        )
