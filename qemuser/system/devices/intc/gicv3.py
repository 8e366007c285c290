"""ARM Generic Interrupt Controller, version 3, as QEMU's virt board has it with
`-M virt,gic-version=3` (without the ITS, so without LPIs: GICD_TYPER.LPIS is 0).

Three parts:
- the distributor (GICD), MMIO, for the shared interrupts (SPIs, 32+): enable, pending,
  active, priority, configuration and group words as in a GICv2, and IROUTER (affinity
  routing, always on: GICD_CTLR.ARE reads 1) instead of ITARGETSR;
- one redistributor (GICR) per CPU, 128 KiB each: the RD frame (CTLR, IIDR, TYPER with the
  CPU's affinity and the Last bit, WAKER) and the SGI frame with the CPU's SGI/PPI registers;
- the CPU interface, which in a GICv3 is system registers (ICC_*_EL1). Unicorn's core does not
  know them: an MRS/MSR of one is an undefined instruction, and the CPU (system/arch/aarch64.py)
  hands the encoding here (`sysreg_read` / `sysreg_write`) and steps over it.

The interrupt state (per-CPU banks for ids 0-31, shared sets for SPIs, priorities, the
acknowledge and priority-drop rules) is the GICv2 model's (gicv2.py), which this class
extends. Security is disabled, as on QEMU's virt without secure=on (GICD_CTLR.DS reads 1), and
both groups signal IRQs: Linux puts every interrupt in group 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qemuser.system.devices.base import Access, FdtContext, Store
from qemuser.system.devices.intc.gicv2 import BANKED, GicBank, GicV2
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node, u64_cells

MAX_CPUS = 16  # Aff0 only (QEMU's virt fills clusters of 16 under a GICv3); SGI1R's TargetList
RD_STRIDE = 0x20000  # RD frame + SGI frame, 64 KiB each
REGION_SIZE = 0xF6_0000  # QEMU's virt: VIRT_GIC_REDIST, 123 redistributors up to the UART

# Identification registers at 0xFFD0..0xFFFC of GICD and of each RD frame (QEMU's gicd_ids:
# ARM, GICv3 architecture revision in PIDR2[7:4]).
_ID_REGS = {0xFFD0: 0x44, 0xFFE0: 0x92, 0xFFE4: 0xB4, 0xFFE8: 0x3B,
            0xFFF0: 0x0D, 0xFFF4: 0xF0, 0xFFF8: 0x05, 0xFFFC: 0xB1}  # fmt: skip
IIDR = 0x43B  # implementer ARM, revision 0 (QEMU's gicv3_iidr)

GICD_CTLR_ARE, GICD_CTLR_DS = 1 << 4, 1 << 6
WAKER_PROCESSOR_SLEEP, WAKER_CHILDREN_ASLEEP = 1 << 1, 1 << 2
ICC_CTLR_EOIMODE, ICC_CTLR_CBPR = 1 << 1, 1 << 0
# ICC_CTLR_EL1's read-only part as QEMU 7.2 reports it: A3V, 24-bit ids, 8 priority bits.
ICC_CTLR_FIXED = 1 << 15 | 1 << 11 | 7 << 8
ICC_SRE_VALUE = 0x7  # SRE, DFB, DIB: system registers only, always

# The ICC registers by (op0, op1, CRn, CRm, op2), EL1 encodings (ARM IHI 0069, 12.1).
ICC_PMR = (3, 0, 4, 6, 0)
ICC_IAR0, ICC_EOIR0, ICC_HPPIR0, ICC_BPR0 = ((3, 0, 12, 8, op2) for op2 in range(4))
ICC_DIR, ICC_RPR, ICC_SGI1R, ICC_ASGI1R, ICC_SGI0R = (
    (3, 0, 12, 11, op2) for op2 in (1, 3, 5, 6, 7)
)
ICC_IAR1, ICC_EOIR1, ICC_HPPIR1, ICC_BPR1, ICC_CTLR, ICC_SRE, ICC_IGRPEN0, ICC_IGRPEN1 = (
    (3, 0, 12, 12, op2) for op2 in range(8)
)  # fmt: skip
SPURIOUS = 1023


def is_icc(op0: int, op1: int, crn: int, crm: int) -> bool:
    """Is (op0, op1, CRn, CRm) an EL1 ICC register's encoding (PMR, or CRn 12, CRm 8-12)?"""
    return op0 == 3 and op1 == 0 and (crn == 4 and crm == 6 or crn == 12 and 8 <= crm <= 12)


@dataclass
class IccState:
    """One CPU interface's registers that the GICv2 bank does not have."""

    ctlr: int = 0  # EOImode, CBPR
    igrpen0: bool = False
    bpr0: int = 2
    ap: dict[tuple[int, int, int, int, int], int] = field(default_factory=dict)  # AP0Rn/AP1Rn


@board_device
@dataclass
class GicV3(GicV2):
    """ARM GICv3: distributor at `base`, redistributors from `redist_base`, one per CPU."""

    kind: ClassVar[str] = "arm_gicv3"
    description: ClassVar[str] = "ARM GICv3 interrupt controller"
    size: int = 0x10000
    redist_base: int = 0x080A_0000
    routes: dict[int, int] = field(default_factory=dict)  # GICD_IROUTER (affinity, IRM bit 31)
    groups: dict[int, int] = field(default_factory=dict)  # IGROUPR/IGRPMODR words, for read-back
    rd_groups: dict[tuple[int, int], int] = field(default_factory=dict)  # the same, per CPU
    wakers: list[int] = field(
        default_factory=lambda: [WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP]
    )
    icc: list[IccState] = field(default_factory=lambda: [IccState()])
    gicd_ctlr: int = 0  # EnableGrp0 / EnableGrp1 (bits 0, 1)
    _frame_cpu: int | None = None  # the redistributor an SGI-frame access reaches

    def set_cpus(self, count: int) -> None:
        if not 0 < count <= MAX_CPUS:
            raise ValueError(f"qemuser's GICv3 serves at most {MAX_CPUS} CPUs, not {count}")
        while len(self.banks) < count:
            self.banks.append(GicBank())
            self.wakers.append(WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP)
            self.icc.append(IccState())

    def windows(self) -> list[tuple[int, int, Access, Store]]:
        return [
            (self.base, self.size, self.read, self.write),
            (self.redist_base, REGION_SIZE, self.redist_read, self.redist_write),
        ]

    def _cpu(self) -> int:
        if self._frame_cpu is not None:
            return self._frame_cpu
        return getattr(self.host, "current_cpu", 0)

    @staticmethod
    def affinity(cpu: int) -> int:
        """The CPU's MPIDR affinity (Aff0 = its index, as the vCPUs' MPIDR_EL1 read)."""
        return cpu

    # --- routing ----------------------------------------------------------------------------
    def _routed_to(self, irq_id: int, cpu: int) -> bool:
        route = self.routes.get(irq_id, 0)
        if route & 1 << 31:  # IRM: any participating CPU; this model picks CPU 0
            return cpu == 0
        aff = route & 0xFF_FFFF | (route >> 32 & 0xFF) << 24
        return aff == self.affinity(cpu)

    def _waiting(self, cpu: int) -> set[int]:
        bank = self.banks[cpu]
        waiting = ((bank.level | bank.pending) & bank.enabled) - bank.active
        shared = ((self.level | self.soft_pending) & self.enabled) - self.active
        if shared:
            shared = {i for i in shared if self._routed_to(i, cpu)}
        return waiting | shared if shared else waiting

    # --- distributor ------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == 0x000:  # CTLR: RWP never set (writes take effect at once)
            return self.gicd_ctlr | GICD_CTLR_ARE | GICD_CTLR_DS
        if offset == 0x004:  # TYPER: No1N, A3V, IDbits 15 (16-bit ids), ITLinesNumber
            return 1 << 25 | 1 << 24 | 0xF << 19 | (self.lines // 32 - 1)
        if offset == 0x008:
            return IIDR
        if offset in _ID_REGS:
            return _ID_REGS[offset]
        if 0x6100 <= offset < 0x6000 + 8 * self.lines:
            irq_id, high = divmod(offset - 0x6000, 8)
            route = self.routes.get(irq_id, 0)
            value = route >> (8 * high)
            return value & ((1 << (8 * size)) - 1)
        if 0x080 <= offset < 0x100 or 0xD00 <= offset < 0xD80:
            return self.groups.get(offset, 0)
        if self._dist_banked(offset):
            return 0  # ids 0-31 live in the redistributors once ARE is set
        if 0x100 <= offset < 0x800 or 0xC00 <= offset < 0xD00:
            return self._dist_read(offset, size)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0x000:
            self.gicd_ctlr = value & 3
            self.dist_on = bool(self.gicd_ctlr)
        elif 0x6100 <= offset < 0x6000 + 8 * self.lines:
            irq_id, high = divmod(offset - 0x6000, 8)
            shift, mask = 8 * high, (1 << (8 * size)) - 1
            route = self.routes.get(irq_id, 0) & ~(mask << shift) | (value & mask) << shift
            self.routes[irq_id] = route & 0xFF_8000_FFFF_FF  # Aff3, IRM, Aff2.Aff1.Aff0
        elif 0x080 <= offset < 0x100 or 0xD00 <= offset < 0xD80:
            self.groups[offset] = value
        elif self._dist_banked(offset):
            pass
        elif 0x100 <= offset < 0x800 or 0xC00 <= offset < 0xD00:
            self._dist_write(offset, size, value)

    @staticmethod
    def _dist_banked(offset: int) -> bool:
        """Is a GICD offset one of ids 0-31's words (RAZ/WI in the distributor with ARE)?"""
        if 0x100 <= offset < 0x400:
            return offset & 0x7F < 4
        if 0x400 <= offset < 0x800:
            return offset < 0x400 + BANKED
        return 0xC00 <= offset < 0xC08

    # --- redistributors ---------------------------------------------------------------------
    def redist_read(self, offset: int, size: int) -> int:
        cpu, frame = divmod(offset, RD_STRIDE)
        if cpu >= len(self.banks):
            return 0
        if frame >= 0x10000:
            return self._sgi_frame(cpu, frame - 0x10000, size, None)
        if frame in (0x0008, 0x000C):  # TYPER, 64 bits: affinity, processor number, Last
            last = 1 << 4 if cpu == len(self.banks) - 1 else 0
            typer = self.affinity(cpu) << 32 | cpu << 8 | last
            typer >>= 8 * (frame - 0x0008)
            return typer & ((1 << (8 * size)) - 1)
        if frame == 0x0014:
            return self.wakers[cpu]
        if frame == 0x0004:
            return IIDR
        return _ID_REGS.get(frame, 0)  # CTLR: no LPIs, RWP and UWP never set

    def redist_write(self, offset: int, size: int, value: int) -> None:
        cpu, frame = divmod(offset, RD_STRIDE)
        if cpu >= len(self.banks):
            return
        if frame >= 0x10000:
            self._sgi_frame(cpu, frame - 0x10000, size, value)
        elif frame == 0x0014:
            # ChildrenAsleep follows ProcessorSleep at once (nothing to quiesce here).
            asleep = value & WAKER_PROCESSOR_SLEEP
            self.wakers[cpu] = asleep | (WAKER_CHILDREN_ASLEEP if asleep else 0)

    def _sgi_frame(self, cpu: int, offset: int, size: int, value: int | None) -> int:
        """The SGI frame: the GICv2 distributor layout for ids 0-31, on CPU `cpu`'s bank."""
        if offset in (0x080, 0xD00):
            if value is not None:
                self.rd_groups[(cpu, offset)] = value
            return self.rd_groups.get((cpu, offset), 0)
        banked = 0x100 <= offset < 0x400 and offset & 0x7F < 4
        banked |= 0x400 <= offset < 0x400 + BANKED or 0xC00 <= offset < 0xC08
        if not banked:
            return 0
        if offset == 0xC00 and value is not None:
            return 0  # ICFGR0: SGIs are edge-triggered, read-only
        self._frame_cpu = cpu
        try:
            if value is None:
                if offset == 0xC00:
                    return 0xAAAA_AAAA
                return self._dist_read(offset, size)
            self._dist_write(offset, size, value)
            return 0
        finally:
            self._frame_cpu = None

    # --- CPU interface (system registers) ---------------------------------------------------
    def _running_priority(self, bank: GicBank) -> int:
        return min((self._priority(bank, i) for i in bank.active), default=0xFF)

    def _acknowledge(self, cpu: int) -> int:
        if not self.pending_irq(cpu):
            return SPURIOUS
        bank = self.banks[cpu]
        irq_id = self._candidates(cpu)[0]
        bank.active.add(irq_id)
        if irq_id >= BANKED:
            self.active.add(irq_id)
            self.soft_pending.discard(irq_id)
        else:
            bank.pending.discard(irq_id)
            bank.sgi_sources.pop(irq_id, None)
        return irq_id

    def _deactivate(self, cpu: int, irq_id: int) -> None:
        self.banks[cpu].active.discard(irq_id)
        if irq_id >= BANKED:
            self.active.discard(irq_id)

    def sysreg_read(self, cpu: int, reg: tuple[int, int, int, int, int]) -> int:
        """MRS of ICC register `reg` on CPU `cpu`."""
        bank, icc = self.banks[cpu], self.icc[cpu]
        if reg == ICC_IAR1 or reg == ICC_IAR0:
            return self._acknowledge(cpu)
        if reg == ICC_HPPIR1 or reg == ICC_HPPIR0:
            candidates = self._candidates(cpu)
            return candidates[0] if candidates else SPURIOUS
        if reg == ICC_PMR:
            return bank.pmr
        if reg == ICC_RPR:
            return self._running_priority(bank)
        if reg == ICC_BPR1:
            return bank.bpr
        if reg == ICC_BPR0:
            return icc.bpr0
        if reg == ICC_CTLR:
            return ICC_CTLR_FIXED | icc.ctlr
        if reg == ICC_SRE:
            return ICC_SRE_VALUE
        if reg == ICC_IGRPEN1:
            return int(bank.cpu_on)
        if reg == ICC_IGRPEN0:
            return int(icc.igrpen0)
        return icc.ap.get(reg, 0)  # AP0Rn / AP1Rn; the SGI registers are write-only

    def sysreg_write(self, cpu: int, reg: tuple[int, int, int, int, int], value: int) -> None:
        """MSR of ICC register `reg` on CPU `cpu`."""
        bank, icc = self.banks[cpu], self.icc[cpu]
        if reg == ICC_EOIR1 or reg == ICC_EOIR0:
            # EOImode 1 splits priority drop (here) from deactivation (ICC_DIR). This model
            # keeps the running priority as the highest active one, so the drop waits for DIR.
            if not icc.ctlr & ICC_CTLR_EOIMODE:
                self._deactivate(cpu, value & 0xFF_FFFF)
        elif reg == ICC_DIR:
            self._deactivate(cpu, value & 0xFF_FFFF)
        elif reg == ICC_PMR:
            bank.pmr = value & 0xFF
        elif reg == ICC_BPR1:
            bank.bpr = value & 7
        elif reg == ICC_BPR0:
            icc.bpr0 = value & 7
        elif reg == ICC_CTLR:
            icc.ctlr = value & (ICC_CTLR_EOIMODE | ICC_CTLR_CBPR)
        elif reg == ICC_IGRPEN1:
            bank.cpu_on = bool(value & 1)
        elif reg == ICC_IGRPEN0:
            icc.igrpen0 = bool(value & 1)
        elif reg in (ICC_SGI1R, ICC_ASGI1R, ICC_SGI0R):
            self.send_sgi1r(cpu, value)
        elif reg[2] == 12 and (reg[3] == 8 and reg[4] >= 4 or reg[3] == 9):
            icc.ap[reg] = value & 0xFFFF_FFFF  # ICC_AP0Rn (CRm 8, op2 4-7), ICC_AP1Rn (CRm 9)
        # ICC_SRE is fixed (system registers always on); anything else is ignored.

    def send_sgi1r(self, source: int, value: int) -> None:
        """ICC_SGI1R_EL1: INTID 27:24, TargetList 15:0 with Aff1 23:16, Aff2 39:32, Aff3
        55:48 and RS 47:44, or IRM (bit 40): every CPU but the sender."""
        sgi = value >> 24 & 0xF
        if value >> 40 & 1:
            targets = [cpu for cpu in range(len(self.banks)) if cpu != source]
        else:
            aff1, aff2, aff3 = value >> 16 & 0xFF, value >> 32 & 0xFF, value >> 48 & 0xFF
            upper = aff1 << 8 | aff2 << 16 | aff3 << 24
            first = (value >> 44 & 0xF) * 16
            wanted = {upper | first + bit for bit in range(16) if value >> bit & 1}
            targets = [cpu for cpu in range(len(self.banks)) if self.affinity(cpu) in wanted]
        for cpu in targets:
            self.banks[cpu].pending.add(sgi)
        if any(cpu != source for cpu in targets):
            # Another CPU has work: end this one's turn so that it runs soon (smp.py).
            engine = getattr(self.host, "uc", None)
            if engine is not None:
                engine.emu_stop()

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        # QEMU 7.2's node for gic-version=3, less the ITS child (as with its=off).
        root.child(
            self.node_name("intc"),
            phandle=ctx.interrupt_parent,
            reg=u64_cells(self.base)
            + u64_cells(self.size)
            + u64_cells(self.redist_base)
            + u64_cells(REGION_SIZE),
            **{"#redistributor-regions": 1},
            compatible="arm,gic-v3",
            ranges=None,
            **{"#size-cells": 2, "#address-cells": 2},
            interrupt_controller=None,
            **{"#interrupt-cells": 3},
        )
