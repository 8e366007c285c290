"""SiFive PLIC, the riscv virt board's platform-level interrupt controller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node


@board_device
@dataclass
class Plic(Device):
    """SiFive PLIC as on QEMU's riscv virt board: context 2h is hart h's M mode, 2h + 1 its S mode.

    Layout (hw/intc/sifive_plic.c, virt's configuration): priorities at 0 (a word per source,
    3 bits), pending bits at 0x1000, per-context enable bits at 0x2000 + 0x80 * context, and per
    context threshold / claim-complete at 0x20_0000 + 0x1000 * context. Sources are level
    triggered: a line still high when its interrupt completes is pending again.
    The machine asks `context_pending()` and raises MEIP / SEIP from it.
    """

    kind: ClassVar[str] = "riscv.sifive.plic"
    description: ClassVar[str] = "SiFive PLIC (platform-level interrupt controller)"
    first_board_irq: ClassVar[int] = 0  # board lines are PLIC sources as they are
    size: int = 0x60_0000  # QEMU reserves room for 512 harts' contexts
    sources: int = 96  # sources 1..96 (riscv,ndev); 0 means "no interrupt"
    contexts: int = 2
    priority: dict[int, int] = field(default_factory=dict)
    level: set[int] = field(default_factory=set)  # lines held high by devices
    pending: set[int] = field(default_factory=set)
    claimed: set[int] = field(default_factory=set)  # in service: gated until completed
    enables: list[set[int]] = field(default_factory=lambda: [set(), set()])
    thresholds: list[int] = field(default_factory=lambda: [0, 0])

    PRIORITY_MASK = 7
    PENDING, ENABLE, ENABLE_STRIDE = 0x1000, 0x2000, 0x80
    CONTEXT, CONTEXT_STRIDE = 0x20_0000, 0x1000
    M_CONTEXT, S_CONTEXT = 0, 1  # hart h's are 2h and 2h + 1

    def set_harts(self, count: int) -> None:
        """Two contexts (M, S) per hart, as QEMU's virt configures the PLIC ("MS" per hart)."""
        while self.contexts < 2 * count:
            self.contexts += 1
            self.enables.append(set())
            self.thresholds.append(0)

    def set_line(self, source: int, high: bool) -> None:
        if not 0 < source <= self.sources:
            return
        if high:
            self.level.add(source)
            if source not in self.claimed:
                self.pending.add(source)
        else:
            self.level.discard(source)
            self.pending.discard(source)

    def _best(self, context: int) -> int:
        """The pending, enabled source above the threshold with the highest priority (0: none)."""
        best, best_priority = 0, self.thresholds[context]
        for source in sorted(self.pending & self.enables[context]):
            priority = self.priority.get(source, 0)
            if priority > best_priority:
                best, best_priority = source, priority
        return best

    def context_pending(self, context: int) -> bool:
        """The context's external-interrupt line (MEIP for 0, SEIP for 1)."""
        return self._best(context) != 0

    def read(self, offset: int, size: int) -> int:
        if offset < self.PENDING:
            return self.priority.get(offset // 4, 0)
        if offset < self.ENABLE:
            return self._word(self.pending, offset - self.PENDING)
        if offset < self.CONTEXT:
            context, word = divmod(offset - self.ENABLE, self.ENABLE_STRIDE)
            return self._word(self.enables[context], word) if context < self.contexts else 0
        context, reg = divmod(offset - self.CONTEXT, self.CONTEXT_STRIDE)
        if context >= self.contexts:
            return 0
        if reg == 0:
            return self.thresholds[context]
        if reg == 4:  # claim: the best source leaves pending and is gated until completed
            source = self._best(context)
            if source:
                self.pending.discard(source)
                self.claimed.add(source)
            return source
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFFFF_FFFF
        if offset < self.PENDING:
            if 0 < offset // 4 <= self.sources:
                self.priority[offset // 4] = value & self.PRIORITY_MASK
            return
        if offset < self.ENABLE:
            return  # pending bits are read-only
        if offset < self.CONTEXT:
            context, word = divmod(offset - self.ENABLE, self.ENABLE_STRIDE)
            if context < self.contexts and word * 8 <= self.sources:
                first = word * 8
                chosen = {first + b for b in range(32) if value >> b & 1}
                span = set(range(first, first + 32))
                valid = {s for s in chosen if 0 < s <= self.sources}
                self.enables[context] = (self.enables[context] - span) | valid
            return
        context, reg = divmod(offset - self.CONTEXT, self.CONTEXT_STRIDE)
        if context >= self.contexts:
            return
        if reg == 0:
            self.thresholds[context] = value & self.PRIORITY_MASK
        elif reg == 4 and value in self.claimed:  # complete
            self.claimed.discard(value)
            if value in self.level:
                self.pending.add(value)

    @staticmethod
    def _word(ids: set[int], byte_offset: int) -> int:
        first = byte_offset // 4 * 32
        return sum(1 << b for b in range(32) if first + b in ids)

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        # Contexts 2h and 2h + 1 are hart h's machine (11) and supervisor (9) external
        # interrupts.
        root.child(
            self.node_name("plic"),
            phandle=ctx.interrupt_parent,
            riscv__ndev=self.sources,
            reg=self.reg(),
            interrupts_extended=[c for i in ctx.cpu_intcs or [ctx.cpu_intc] for c in (i, 11, i, 9)],
            interrupt_controller=None,
            compatible=["sifive,plic-1.0.0", "riscv,plic0"],
            **{"#address-cells": 0, "#interrupt-cells": 1},
        )
