"""SiFive CLINT: the riscv hart's machine timer and software interrupt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node

NEVER = 0xFFFF_FFFF_FFFF_FFFF  # mtimecmp at reset: no timer


@board_device
@dataclass
class Clint(Device):
    """SiFive CLINT: a msip word and a mtimecmp per hart, one mtime (10 MHz, following the
    host clock). Hart h's msip is at 4 * h, its mtimecmp at 0x4000 + 8 * h (QEMU's layout).

    The machine asks `timer_pending(h)` / `software_pending(h)` between slices and delivers the
    machine-mode interrupt itself: unicorn cannot raise MTIP/MSIP through `mip`.
    """

    kind: ClassVar[str] = "riscv.sifive.clint"
    description: ClassVar[str] = "SiFive CLINT (machine timer and software interrupts)"
    size: int = 0x10000
    freq_hz: int = 10_000_000
    msips: list[int] = field(default_factory=lambda: [0])
    mtimecmps: list[int] = field(default_factory=lambda: [NEVER])
    MSIP, MTIMECMP, MTIME = 0x0, 0x4000, 0xBFF8
    MAX_HARTS = 4095  # mtimecmp words fit below mtime

    def set_harts(self, count: int) -> None:
        while len(self.msips) < count:
            self.msips.append(0)
            self.mtimecmps.append(NEVER)

    @property
    def msip(self) -> int:
        return self.msips[0]

    @property
    def mtimecmp(self) -> int:
        return self.mtimecmps[0]

    def mtime(self) -> int:
        return self.host.now_ns() * self.freq_hz // 1_000_000_000

    def timer_pending(self, hart: int = 0) -> bool:
        return self.mtime() >= self.mtimecmps[hart]

    def ns_until_timer(self, hart: int = 0) -> int:
        """Host nanoseconds until mtime reaches the hart's mtimecmp (0 when already due)."""
        ticks = self.mtimecmps[hart] - self.mtime()
        return max(0, ticks * 1_000_000_000 // self.freq_hz)

    def software_pending(self, hart: int = 0) -> bool:
        return bool(self.msips[hart] & 1)

    def read(self, offset: int, size: int) -> int:
        harts = len(self.msips)
        if offset < 4 * harts:
            return _slice(self.msips[offset // 4], offset % 4, size)
        if self.MTIMECMP <= offset < self.MTIMECMP + 8 * harts:
            hart, byte = divmod(offset - self.MTIMECMP, 8)
            return _slice(self.mtimecmps[hart], byte, size)
        if self.MTIME <= offset < self.MTIME + 8:
            return _slice(self.mtime(), offset - self.MTIME, size)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        harts = len(self.msips)
        if offset < 4 * harts and not offset % 4:
            self.msips[offset // 4] = value & 1
        elif self.MTIMECMP <= offset < self.MTIMECMP + 8 * harts:
            hart, byte = divmod(offset - self.MTIMECMP, 8)
            self.mtimecmps[hart] = _merge(self.mtimecmps[hart], byte, size, value)

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        # Lines 3 (machine software) and 7 (machine timer) of each hart's local controller.
        root.child(
            self.node_name("clint"),
            compatible=["sifive,clint0", "riscv,clint0"],
            reg=self.reg(),
            interrupts_extended=[c for i in ctx.cpu_intcs or [ctx.cpu_intc] for c in (i, 3, i, 7)],
        )


def _slice(value: int, byte_offset: int, size: int) -> int:
    """The `size` bytes of a little-endian 64-bit register starting at `byte_offset`."""
    return (value >> (8 * byte_offset)) & ((1 << (8 * size)) - 1)


def _merge(old: int, byte_offset: int, size: int, value: int) -> int:
    mask = ((1 << (8 * size)) - 1) << (8 * byte_offset)
    return (old & ~mask) | ((value << (8 * byte_offset)) & mask)
