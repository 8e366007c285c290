"""Google's goldfish RTC, as QEMU's riscv virt board has it (hw/rtc/goldfish_rtc.c) at
0x101000 on PLIC source 11: nanoseconds since the epoch, set by the guest or by -rtc base=,
and an alarm that raises the interrupt.

Registers: TIME_LOW (reading it latches TIME_HIGH), TIME_HIGH, ALARM_LOW (writing it arms the
alarm at ALARM_HIGH:ALARM_LOW), ALARM_HIGH, IRQ_ENABLED, CLEAR_ALARM, ALARM_STATUS,
CLEAR_INTERRUPT.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node

TIME_LOW, TIME_HIGH, ALARM_LOW, ALARM_HIGH = 0x00, 0x04, 0x08, 0x0C
IRQ_ENABLED, CLEAR_ALARM, ALARM_STATUS, CLEAR_INTERRUPT = 0x10, 0x14, 0x18, 0x1C
NS = 1_000_000_000


@board_device
@dataclass
class GoldfishRtc(Device):
    kind: ClassVar[str] = "goldfish_rtc"
    description: ClassVar[str] = "Goldfish RTC"
    irq: int = 11
    load_offset: int = 0  # -rtc base=: seconds between the guest's clock and the host's
    tick_offset_ns: int = 0  # what the guest set, relative to host time
    time_high: int = 0
    alarm_high: int = 0
    alarm_low: int = 0
    alarm_running: bool = False
    irq_enabled: bool = False
    irq_pending: bool = False
    _timer: threading.Timer | None = field(default=None, repr=False, compare=False)

    def now_ns(self) -> int:
        return time.time_ns() + self.load_offset * NS + self.tick_offset_ns

    def _update_irq(self) -> None:
        self.host.set_irq(self.irq, self.irq_pending and self.irq_enabled)

    def _fire(self) -> None:
        """The alarm time came (on the machine's thread)."""
        if self.alarm_running:
            self.alarm_running = False
            self.irq_pending = True
            self._update_irq()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, ((self.alarm_high << 32 | self.alarm_low) - self.now_ns()) / NS)
        self.alarm_running = True
        post = getattr(self.host, "post_io", None)
        if post is None or delay == 0.0:
            self._fire()
            return
        self._timer = threading.Timer(delay, lambda: post(self._fire))
        self._timer.daemon = True
        self._timer.start()

    def read(self, offset: int, size: int) -> int:
        if offset == TIME_LOW:
            now = self.now_ns()
            self.time_high = now >> 32
            return now & 0xFFFF_FFFF
        return {
            TIME_HIGH: self.time_high,
            ALARM_LOW: self.alarm_low,
            ALARM_HIGH: self.alarm_high,
            IRQ_ENABLED: int(self.irq_enabled),
            ALARM_STATUS: int(self.alarm_running),
        }.get(offset, 0)

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFFFF_FFFF
        if offset == TIME_LOW:
            wanted = self.time_high << 32 | value
            self.tick_offset_ns += wanted - self.now_ns()
        elif offset == TIME_HIGH:
            self.time_high = value
        elif offset == ALARM_LOW:
            self.alarm_low = value
            self._arm()
        elif offset == ALARM_HIGH:
            self.alarm_high = value
        elif offset == IRQ_ENABLED:
            self.irq_enabled = bool(value & 1)
            self._update_irq()
        elif offset == CLEAR_ALARM:
            self.alarm_running = False
            if self._timer is not None:
                self._timer.cancel()
        elif offset == CLEAR_INTERRUPT:
            self.irq_pending = False
            self._update_irq()

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        root.child(
            self.node_name("rtc"),
            interrupts=ctx.interrupts(self.irq),
            interrupt_parent=ctx.interrupt_parent,
            reg=self.reg(),
            compatible="google,goldfish-rtc",
        )
