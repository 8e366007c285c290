"""ARM Generic Interrupt Controller, version 2 (distributor and CPU interfaces), for up to
8 CPUs (the GICv2 limit).

Interrupts 0-15 (SGIs) and 16-31 (PPIs) are banked: each CPU has its own enable, pending,
active and priority state for them (a `GicBank`), and so are the CPU interface registers. Which
bank an MMIO access reaches is decided by the CPU that makes it: the machine runs one vCPU at a
time and says which (`current_cpu`). Shared interrupts (32+) go to the CPUs their ITARGETSR byte
names; an SPI is active on the CPU that acknowledged it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qemuser.system.devices.base import Access, Device, FdtContext, Store
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node, u64_cells

MAX_CPUS = 8  # GICv2: ITARGETSR bytes and the SGI target list have 8 bits
BANKED = 32  # interrupt ids below this are per CPU


@dataclass
class GicBank:
    """One CPU's banked state: its CPU interface, and interrupts 0-31."""

    cpu_on: bool = False
    pmr: int = 0
    bpr: int = 0
    enabled: set[int] = field(default_factory=set)
    level: set[int] = field(default_factory=set)  # PPIs held high (the CPU's timers)
    pending: set[int] = field(default_factory=set)  # set through ISPENDR0 / SGIs
    active: set[int] = field(default_factory=set)  # acknowledged here, SPIs included
    priority: dict[int, int] = field(default_factory=dict)
    sgi_sources: dict[int, int] = field(default_factory=dict)  # SGI id -> mask of senders


@board_device
@dataclass
class GicV2(Device):
    """ARM GICv2: distributor at `base`, CPU interface at `cpu_base`.

    Interrupt ids: 16-31 private (the timer's PPIs), 32+ shared (board line n is id 32 + n).
    Level lines come from `set_line` / `set_ppi`; the machine asks `pending_irq(cpu)` between
    slices.
    """

    kind: ClassVar[str] = "arm_gic"
    description: ClassVar[str] = "ARM GICv2 interrupt controller"
    first_board_irq: ClassVar[int] = 32  # board line n is shared peripheral interrupt 32 + n
    size: int = 0x10000
    cpu_base: int = 0x0801_0000
    lines: int = 288
    dist_on: bool = False
    enabled: set[int] = field(default_factory=set)  # shared interrupts (32+) from here on
    level: set[int] = field(default_factory=set)  # lines held high by devices
    soft_pending: set[int] = field(default_factory=set)  # set through ISPENDR
    active: set[int] = field(default_factory=set)
    priority: dict[int, int] = field(default_factory=dict)
    targets: dict[int, int] = field(default_factory=dict)  # ITARGETSR bytes (CPU masks)
    config: dict[int, int] = field(default_factory=dict)  # ICFGR words, kept for read-back
    banks: list[GicBank] = field(default_factory=lambda: [GicBank()])
    SPURIOUS = 1023

    def set_cpus(self, count: int) -> None:
        """Give the GIC `count` CPU interfaces (the machine's vCPUs)."""
        if not 0 < count <= MAX_CPUS:
            raise ValueError(f"a GICv2 serves at most {MAX_CPUS} CPUs, not {count}")
        while len(self.banks) < count:
            self.banks.append(GicBank())

    def windows(self) -> list[tuple[int, int, Access, Store]]:
        return [
            (self.base, self.size, self.read, self.write),
            (self.cpu_base, 0x10000, self.cpu_read, self.cpu_write),
        ]

    def _cpu(self) -> int:
        """The CPU making the current access."""
        return getattr(self.host, "current_cpu", 0)

    # --- lines ------------------------------------------------------------------------------
    def set_line(self, irq_id: int, high: bool) -> None:
        if irq_id < BANKED:
            self.set_ppi(0, irq_id, high)
            return
        (self.level.add if high else self.level.discard)(irq_id)

    def set_ppi(self, cpu: int, irq_id: int, high: bool) -> None:
        """A CPU-private line (its timers' PPIs)."""
        level = self.banks[cpu].level
        (level.add if high else level.discard)(irq_id)

    def line_high(self, cpu: int, irq_id: int) -> bool:
        return irq_id in (self.banks[cpu].level if irq_id < BANKED else self.level)

    def _priority(self, bank: GicBank, irq_id: int) -> int:
        return (bank.priority if irq_id < BANKED else self.priority).get(irq_id, 0)

    def _waiting(self, cpu: int) -> set[int]:
        """Pending, enabled, inactive interrupts routed to `cpu`."""
        bank = self.banks[cpu]
        waiting = ((bank.level | bank.pending) & bank.enabled) - bank.active
        shared = ((self.level | self.soft_pending) & self.enabled) - self.active
        if shared and len(self.banks) > 1:
            bit = 1 << cpu
            shared = {i for i in shared if self.targets.get(i, 1) & bit}
        return waiting | shared if shared else waiting

    def _candidates(self, cpu: int) -> list[int]:
        bank = self.banks[cpu]
        return sorted(self._waiting(cpu), key=lambda i: (self._priority(bank, i), i))

    def pending_irq(self, cpu: int = 0) -> bool:
        """An interrupt CPU `cpu` should take now (its IRQ line asserted)."""
        bank = self.banks[cpu]
        if not (self.dist_on and bank.cpu_on):
            return False
        # Asked on every slice and every DAIF write: the common "nothing pending" is set
        # arithmetic only, no sorting.
        waiting = self._waiting(cpu)
        if not waiting:
            return False
        running = min((self._priority(bank, i) for i in bank.active), default=0x100)
        threshold = min(bank.pmr, running)
        return any(self._priority(bank, i) < threshold for i in waiting)

    # --- distributor ------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        return self._dist_read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self._dist_write(offset, size, value)

    @staticmethod
    def _bits(ids: set[int], offset: int, base: int) -> int:
        first = (offset - base) * 8
        return sum(1 << b for b in range(32) if first + b in ids)

    def _dist_read(self, offset: int, size: int) -> int:
        if offset == 0x000:
            return int(self.dist_on)
        if offset == 0x004:  # TYPER: ITLinesNumber, CPUNumber
            return self.lines // 32 - 1 | (len(self.banks) - 1) << 5
        if offset == 0x008:  # IIDR: implementer ARM
            return 0x0200_043B
        bank = self.banks[self._cpu()]
        # Set/clear register pairs read the same bits: 0x100/0x180 enable, 0x200/0x280 pending,
        # 0x300/0x380 active. Their first word (ids 0-31) is the accessing CPU's.
        if 0x100 <= offset < 0x400:
            kind = (offset >> 8) - 1
            if offset & 0x7F < 4:
                banked = (bank.enabled, bank.level | bank.pending, bank.active)[kind]
                return self._bits(banked & set(range(BANKED)), offset, offset & ~0x7F)
            shared = (self.enabled, self.level | self.soft_pending, self.active)[kind]
            return self._bits(shared, offset, offset & ~0x7F)
        if 0x400 <= offset < 0x800:
            first = offset - 0x400
            return sum(self._priority(bank, first + i) << (8 * i) for i in range(size))
        if 0x800 <= offset < 0xC00:
            first = offset - 0x800
            if first < BANKED or len(self.banks) == 1:
                # Reads of the banked bytes name the reader itself (Linux finds its CPU
                # interface this way); with one CPU every interrupt targets it.
                return (0x0101_0101 << self._cpu()) & ((1 << (8 * size)) - 1)
            return sum(self.targets.get(first + i, 1) << (8 * i) for i in range(size))
        if 0xC00 <= offset < 0xD00:
            return self.config.get(offset, 0)
        if 0xFE0 <= offset < 0x1000:  # ICPIDR2: GICv2
            return 0x2B if offset == 0xFE8 else 0
        return 0

    def _dist_write(self, offset: int, size: int, value: int) -> None:
        def ids(base: int) -> set[int]:
            first = (offset - base) * 8
            return {first + b for b in range(32) if value >> b & 1}

        if offset == 0x000:
            self.dist_on = bool(value & 1)
            return
        cpu = self._cpu()
        bank = self.banks[cpu]
        if 0x100 <= offset < 0x400:
            base = offset & ~0x7F
            chosen = ids(base)
            banked = offset & 0x7F < 4
            target = (
                (bank.enabled, bank.pending, bank.active)
                if banked
                else (self.enabled, self.soft_pending, self.active)
            )[(offset >> 8) - 1]
            if base & 0x80:  # the clear half
                target -= chosen
                if banked and base == 0x280:
                    for sgi in chosen:
                        bank.sgi_sources.pop(sgi, None)
            else:
                target |= chosen
        elif 0x400 <= offset < 0x800:
            for i in range(size):
                irq_id = offset - 0x400 + i
                store = bank.priority if irq_id < BANKED else self.priority
                store[irq_id] = (value >> (8 * i)) & 0xFF
        elif 0x800 <= offset < 0xC00:
            for i in range(size):
                irq_id = offset - 0x800 + i
                if irq_id >= BANKED:
                    self.targets[irq_id] = (value >> (8 * i)) & 0xFF
        elif 0xC00 <= offset < 0xD00:
            self.config[offset] = value
        elif offset == 0xF00:
            self._send_sgi(cpu, value)

    def _send_sgi(self, source: int, value: int) -> None:
        """GICD_SGIR: SGI id in bits 3:0, target list in 23:16, list filter in 25:24."""
        sgi, targets, mode = value & 0xF, value >> 16 & 0xFF, value >> 24 & 3
        every = (1 << len(self.banks)) - 1
        if len(self.banks) == 1:
            targets = 1  # one CPU: it is the only one an SGI can reach
        elif mode == 1:
            targets = every & ~(1 << source)
        elif mode == 2:
            targets = 1 << source
        elif mode == 3:
            return  # reserved
        for cpu in range(len(self.banks)):
            if targets >> cpu & 1:
                bank = self.banks[cpu]
                bank.pending.add(sgi)
                bank.sgi_sources[sgi] = bank.sgi_sources.get(sgi, 0) | 1 << source
        if targets & ~(1 << source):
            # Another CPU has work: end this one's turn so that it runs soon (smp.py).
            engine = getattr(self.host, "uc", None)
            if engine is not None:
                engine.emu_stop()

    # --- CPU interface ----------------------------------------------------------------------
    def cpu_read(self, offset: int, size: int) -> int:
        cpu = self._cpu()
        bank = self.banks[cpu]
        if offset == 0x00:
            return int(bank.cpu_on)
        if offset == 0x04:
            return bank.pmr
        if offset == 0x08:
            return bank.bpr
        if offset == 0x0C:  # IAR: acknowledge the best pending interrupt
            if not self.pending_irq(cpu):
                return self.SPURIOUS
            irq_id = self._candidates(cpu)[0]
            bank.active.add(irq_id)
            if irq_id >= BANKED:
                self.active.add(irq_id)
                self.soft_pending.discard(irq_id)
                return irq_id
            if irq_id < 16 and irq_id in bank.sgi_sources:
                sources = bank.sgi_sources[irq_id]
                source = (sources & -sources).bit_length() - 1
                sources &= sources - 1
                if sources:
                    bank.sgi_sources[irq_id] = sources  # still pending from another sender
                else:
                    del bank.sgi_sources[irq_id]
                    bank.pending.discard(irq_id)
                return irq_id | source << 10
            bank.pending.discard(irq_id)
            return irq_id
        if offset == 0x18:
            candidates = self._candidates(cpu)
            return candidates[0] if candidates else self.SPURIOUS
        if offset == 0xFC:  # GICC_IIDR: GICv2, ARM
            return 0x0202_043B
        return 0

    def cpu_write(self, offset: int, size: int, value: int) -> None:
        bank = self.banks[self._cpu()]
        if offset == 0x00:
            bank.cpu_on = bool(value & 1)
        elif offset == 0x04:
            bank.pmr = value & 0xFF
        elif offset == 0x08:
            bank.bpr = value & 7
        elif offset in (0x10, 0x1000):  # EOIR (and DIR when EOImode is split)
            irq_id = value & 0x3FF
            bank.active.discard(irq_id)
            if irq_id >= BANKED:
                self.active.discard(irq_id)

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        root.child(
            self.node_name("intc"),
            compatible=["arm,cortex-a15-gic"],
            reg=u64_cells(self.base)
            + u64_cells(self.size)
            + u64_cells(self.cpu_base)
            + u64_cells(0x10000),
            interrupt_controller=None,
            phandle=ctx.interrupt_parent,
            **{"#interrupt-cells": 3, "#address-cells": 2, "#size-cells": 2},
        )
