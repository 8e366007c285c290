"""Device models: each knows its registers, its interrupt line and its device-tree node.

Nothing here knows the board: a device talks to the machine only through `DeviceHost` (console
bytes, power-off, interrupt lines, the guest clock). Register behaviour is plain Python, so the
unit tests drive `read`/`write` directly without unicorn.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from qemuser.system.fdt import Node, u64_cells

Access = Callable[[int, int], int]  # (offset, size) -> value
Store = Callable[[int, int, int], None]  # (offset, size, value)


class DeviceHost(Protocol):
    """What a device may ask of the machine it is plugged into."""

    def console_write(self, data: bytes) -> None: ...

    def power_off(self, status: int) -> None: ...

    def reset(self) -> None: ...

    def set_irq(self, line: int, level: bool) -> None: ...

    def now_ns(self) -> int: ...


class NullHost:
    """A host that records what devices ask; used by unit tests and before attach."""

    def __init__(self) -> None:
        self.console = bytearray()
        self.status: int | None = None
        self.resets = 0
        self.irqs: dict[int, bool] = {}
        self.clock_ns = 0

    def console_write(self, data: bytes) -> None:
        self.console.extend(data)

    def power_off(self, status: int) -> None:
        self.status = status

    def reset(self) -> None:
        self.resets += 1

    def set_irq(self, line: int, level: bool) -> None:
        self.irqs[line] = level

    def now_ns(self) -> int:
        return self.clock_ns


@dataclass
class FdtContext:
    """Board-wide facts a device node needs (the interrupt-cell convention differs per board)."""

    interrupt_parent: int  # phandle of the interrupt controller
    clock: int  # phandle of the fixed APB clock AMBA devices name
    gic: bool  # GIC spells an interrupt <SPI, number, level-high>; PLIC as <number>
    cpu_intc: int = 0  # riscv: phandle of hart 0's local interrupt controller
    next_phandle: int = 0x100
    root: Node | None = None  # the tree's root, for nodes a board keeps outside its bus (/soc)

    def interrupts(self, irq: int) -> list[int]:
        return [0, irq, 4] if self.gic else [irq]

    def phandle(self) -> int:
        """A fresh phandle for a node that others refer to."""
        self.next_phandle += 1
        return self.next_phandle


@dataclass
class Device:
    """Base of every device: an MMIO window at `base` of `size` bytes (size 0: no MMIO)."""

    kind: ClassVar[str] = "device"
    description: ClassVar[str] = ""
    base: int = 0
    size: int = 0x1000
    host: DeviceHost = field(default_factory=NullHost, repr=False, compare=False)

    def attach(self, host: DeviceHost) -> None:
        self.host = host

    def windows(self) -> list[tuple[int, int, Access, Store]]:
        """The MMIO windows this device answers: (base, size, read, write)."""
        return [(self.base, self.size, self.read, self.write)] if self.size else []

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        pass

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        """Add this device's node(s) to the tree."""

    def node_name(self, stem: str) -> str:
        return f"{stem}@{self.base:x}"

    def reg(self) -> list[int]:
        return u64_cells(self.base) + u64_cells(self.size)


class _SerialInput:
    """Bytes typed on the console, waiting for the guest to read them."""

    def __init__(self) -> None:
        self.queue: deque[int] = deque()

    def feed(self, data: bytes) -> None:
        self.queue.extend(data)


@dataclass
class Pl011(Device):
    """ARM PrimeCell UART (PL011): data, flags, interrupt mask/status and the AMBA ID words."""

    kind: ClassVar[str] = "pl011"
    description: ClassVar[str] = "ARM PL011 UART"
    irq: int = 1
    imsc: int = 0
    cr: int = 0x300
    lcr_h: int = 0
    ibrd: int = 0
    fbrd: int = 0
    ifls: int = 0x12
    tx_raw: bool = True  # TX interrupt raw status: we send instantly, so the FIFO is always empty
    rx: _SerialInput = field(default_factory=_SerialInput, repr=False, compare=False)

    # AMBA peripheral and PrimeCell IDs at 0xFE0..0xFFC: Linux's amba bus matches on them.
    _IDS: ClassVar[tuple[int, ...]] = (0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1)
    DR, RSR, FR, ILPR, IBRD, FBRD, LCR_H, CR, IFLS = (
        0x0,
        0x4,
        0x18,
        0x20,
        0x24,
        0x28,
        0x2C,
        0x30,
        0x34,
    )
    IMSC, RIS, MIS, ICR = 0x38, 0x3C, 0x40, 0x44
    FR_RXFE, FR_RXFF, FR_TXFE = 1 << 4, 1 << 6, 1 << 7
    LCR_H_FEN = 1 << 4  # FIFOs on: 16 bytes deep; off: a one-byte holding register
    FIFO_DEPTH = 16
    INT_RX, INT_TX, INT_RT = 1 << 4, 1 << 5, 1 << 6

    def feed_input(self, data: bytes) -> None:
        """Bytes typed on the console: into the receive FIFO, raising RX as IMSC allows."""
        self.rx.feed(data)
        self._update()

    def _ris(self) -> int:
        ris = self.INT_TX if self.tx_raw else 0
        if self.rx.queue:
            ris |= self.INT_RX | self.INT_RT
        return ris

    def _update(self) -> None:
        self.host.set_irq(self.irq, bool(self._ris() & self.imsc))

    def read(self, offset: int, size: int) -> int:
        if offset == self.DR:
            value = self.rx.queue.popleft() if self.rx.queue else 0
            self._update()
            return value
        if offset == self.FR:
            # Typed bytes wait in `rx` however many there are; the guest sees the FIFO as full
            # once a FIFO's worth is waiting (the transmitter is always empty: we send at once).
            depth = self.FIFO_DEPTH if self.lcr_h & self.LCR_H_FEN else 1
            waiting = len(self.rx.queue)
            if not waiting:
                return self.FR_TXFE | self.FR_RXFE
            return self.FR_TXFE | (self.FR_RXFF if waiting >= depth else 0)
        if 0xFE0 <= offset < 0x1000:
            return self._IDS[(offset - 0xFE0) // 4]
        regs = {
            self.IBRD: self.ibrd,
            self.FBRD: self.fbrd,
            self.LCR_H: self.lcr_h,
            self.CR: self.cr,
            self.IFLS: self.ifls,
            self.IMSC: self.imsc,
            self.RIS: self._ris(),
            self.MIS: self._ris() & self.imsc,
        }
        return regs.get(offset, 0)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == self.DR:
            self.host.console_write(bytes([value & 0xFF]))
            self.tx_raw = True
        elif offset == self.IMSC:
            self.imsc = value & 0x7FF
        elif offset == self.ICR:
            if value & self.INT_TX:
                # Linux clears TX and expects it back once the FIFO drains: it drains at once.
                self.tx_raw = True
        elif offset == self.CR:
            self.cr = value & 0xFFFF
        elif offset == self.LCR_H:
            self.lcr_h = value & 0xFF
        elif offset == self.IBRD:
            self.ibrd = value & 0xFFFF
        elif offset == self.FBRD:
            self.fbrd = value & 0x3F
        elif offset == self.IFLS:
            self.ifls = value & 0x3F
        self._update()

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        root.child(
            self.node_name("pl011"),
            compatible=["arm,pl011", "arm,primecell"],
            reg=self.reg(),
            interrupts=ctx.interrupts(self.irq),
            clock_names=["uartclk", "apb_pclk"],
            clocks=[ctx.clock, ctx.clock],
        )


@dataclass
class Ns16550(Device):
    """NS16550A UART with one-byte registers (reg-shift 0), as on QEMU's riscv virt board."""

    kind: ClassVar[str] = "ns16550a"
    description: ClassVar[str] = "NS16550A UART"
    size: int = 0x100
    irq: int = 10
    ier: int = 0
    lcr: int = 0
    mcr: int = 0
    scr: int = 0
    dll: int = 0
    dlm: int = 0
    # The "transmitter empty" interrupt is an event, not a level (as QEMU's serial.c): raised
    # when THR empties or THRI is enabled, cleared by reading IIR or writing THR. Transmission
    # is instant here, so every write empties THR again.
    thr_pending: bool = False
    rx: _SerialInput = field(default_factory=_SerialInput, repr=False, compare=False)

    LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40
    IER_RDI, IER_THRI = 0x01, 0x02

    def feed_input(self, data: bytes) -> None:
        """Bytes typed on the console: queued for the guest, raising the RX interrupt."""
        self.rx.feed(data)
        self._update()

    def take_input(self) -> int | None:
        """One received byte, as firmware's getchar reads it (None when none is waiting)."""
        if not self.rx.queue:
            return None
        value = self.rx.queue.popleft()
        self._update()
        return value

    def _iir(self) -> int:
        if self.ier & self.IER_RDI and self.rx.queue:
            return 0xC4  # FIFOs enabled, received data available
        if self.ier & self.IER_THRI and self.thr_pending:
            return 0xC2  # FIFOs enabled, transmitter empty
        return 0xC1  # no interrupt pending

    def _update(self) -> None:
        self.host.set_irq(self.irq, not self._iir() & 1)

    def read(self, offset: int, size: int) -> int:
        dlab = bool(self.lcr & 0x80)
        if offset == 0:
            if dlab:
                return self.dll
            value = self.take_input()
            return 0 if value is None else value
        if offset == 1:
            return self.dlm if dlab else self.ier
        if offset == 2:
            iir = self._iir()
            if iir == 0xC2:  # reading the THRE reason acknowledges it
                self.thr_pending = False
                self._update()
            return iir
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            return self.LSR_THRE | self.LSR_TEMT | (self.LSR_DR if self.rx.queue else 0)
        if offset == 6:
            return 0xB0  # modem status: CTS, DSR, DCD asserted
        if offset == 7:
            return self.scr
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        dlab = bool(self.lcr & 0x80)
        if offset == 0:
            if dlab:
                self.dll = value
            else:
                self.host.console_write(bytes([value]))
                self.thr_pending = True
        elif offset == 1:
            if dlab:
                self.dlm = value
            else:
                if value & ~self.ier & self.IER_THRI:
                    self.thr_pending = True  # enabling THRI with THR empty raises it
                self.ier = value & 0x0F
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            self.mcr = value
        elif offset == 7:
            self.scr = value
        self._update()

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        root.child(
            self.node_name("serial"),
            compatible="ns16550a",
            reg=self.reg(),
            interrupts=ctx.interrupts(self.irq),
            interrupt_parent=ctx.interrupt_parent,
            clock_frequency=0x384000,
        )


@dataclass
class SifiveTest(Device):
    """SiFive test finisher: 0x5555 powers off (pass), 0x3333 fails with code, 0x7777 resets."""

    kind: ClassVar[str] = "sifive_test"
    description: ClassVar[str] = "SiFive test device (poweroff / reboot)"
    FINISHER_FAIL, FINISHER_PASS, FINISHER_RESET = 0x3333, 0x5555, 0x7777

    def write(self, offset: int, size: int, value: int) -> None:
        if offset != 0:
            return
        code = value & 0xFFFF
        if code == self.FINISHER_PASS:
            self.host.power_off(0)
        elif code == self.FINISHER_FAIL:
            self.host.power_off((value >> 16) & 0xFFFF)
        elif code == self.FINISHER_RESET:
            self.host.reset()

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        node = root.child(
            self.node_name("test"),
            compatible=["sifive,test1", "sifive,test0", "syscon"],
            reg=self.reg(),
            phandle=ctx.phandle(),
        )
        # Linux's syscon-poweroff / syscon-reboot drivers find the device through these, which
        # QEMU's virt puts at the root of the tree, outside /soc.
        top = ctx.root if ctx.root is not None else root
        top.child(
            "poweroff",
            compatible="syscon-poweroff",
            regmap=node.props["phandle"],
            offset=0,
            value=self.FINISHER_PASS,
        )
        top.child(
            "reboot",
            compatible="syscon-reboot",
            regmap=node.props["phandle"],
            offset=0,
            value=self.FINISHER_RESET,
        )


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


@dataclass
class Psci(Device):
    """PSCI 0.2+ firmware calls (no MMIO): the machine forwards HVC/SMC function ids here."""

    kind: ClassVar[str] = "psci"
    description: ClassVar[str] = "PSCI firmware interface over HVC/SMC"
    size: int = 0
    method: str = "hvc"

    VERSION, CPU_OFF, SYSTEM_OFF, SYSTEM_RESET, FEATURES = (
        0x8400_0000,
        0x8400_0002,
        0x8400_0008,
        0x8400_0009,
        0x8400_000A,
    )
    NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF  # -1
    _KNOWN: ClassVar[frozenset[int]] = frozenset(
        {0x8400_0000, 0x8400_0002, 0x8400_0008, 0x8400_0009, 0x8400_000A}
    )

    def call(self, function: int, arg: int) -> int:
        """Run one PSCI call; returns the value for x0."""
        function &= 0xFFFF_FFFF
        if function == self.VERSION:
            return 0x0001_0000  # PSCI 1.0
        if function == self.SYSTEM_OFF:
            self.host.power_off(0)
            return 0
        if function == self.SYSTEM_RESET:
            self.host.reset()
            return 0
        if function == self.FEATURES:
            return 0 if (arg & 0xFFFF_FFFF) in self._KNOWN else self.NOT_SUPPORTED
        return self.NOT_SUPPORTED

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        root.child(
            "psci",
            compatible=["arm,psci-1.0", "arm,psci-0.2", "arm,psci"],
            method=self.method,
            cpu_on=0xC400_0003,
            cpu_off=0x8400_0002,
            cpu_suspend=0xC400_0001,
            migrate=0xC400_0005,
        )


DEVICE_TYPES: tuple[type[Device], ...] = (Pl011, Ns16550, SifiveTest, Pl031, Psci)


@dataclass
class Clint(Device):
    """SiFive CLINT for one hart: msip, mtimecmp and mtime (10 MHz, following the host clock).

    The machine asks `timer_pending()` / `software_pending()` between slices and delivers the
    machine-mode interrupt itself: unicorn cannot raise MTIP/MSIP through `mip`.
    """

    kind: ClassVar[str] = "riscv.sifive.clint"
    description: ClassVar[str] = "SiFive CLINT (machine timer and software interrupts)"
    size: int = 0x10000
    freq_hz: int = 10_000_000
    msip: int = 0
    mtimecmp: int = 0xFFFF_FFFF_FFFF_FFFF
    MSIP, MTIMECMP, MTIME = 0x0, 0x4000, 0xBFF8

    def mtime(self) -> int:
        return self.host.now_ns() * self.freq_hz // 1_000_000_000

    def timer_pending(self) -> bool:
        return self.mtime() >= self.mtimecmp

    def ns_until_timer(self) -> int:
        """Host nanoseconds until mtime reaches mtimecmp (0 when already due)."""
        ticks = self.mtimecmp - self.mtime()
        return max(0, ticks * 1_000_000_000 // self.freq_hz)

    def software_pending(self) -> bool:
        return bool(self.msip & 1)

    def read(self, offset: int, size: int) -> int:
        if offset == self.MSIP:
            return self.msip
        for reg, value in ((self.MTIMECMP, self.mtimecmp), (self.MTIME, self.mtime())):
            if reg <= offset < reg + 8:
                return _slice(value, offset - reg, size)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == self.MSIP:
            self.msip = value & 1
        elif self.MTIMECMP <= offset < self.MTIMECMP + 8:
            self.mtimecmp = _merge(self.mtimecmp, offset - self.MTIMECMP, size, value)

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        # Lines 3 (machine software) and 7 (machine timer) of hart 0's local controller.
        root.child(
            self.node_name("clint"),
            compatible=["sifive,clint0", "riscv,clint0"],
            reg=self.reg(),
            interrupts_extended=[ctx.cpu_intc, 3, ctx.cpu_intc, 7],
        )


def _slice(value: int, byte_offset: int, size: int) -> int:
    """The `size` bytes of a little-endian 64-bit register starting at `byte_offset`."""
    return (value >> (8 * byte_offset)) & ((1 << (8 * size)) - 1)


def _merge(old: int, byte_offset: int, size: int, value: int) -> int:
    mask = ((1 << (8 * size)) - 1) << (8 * byte_offset)
    return (old & ~mask) | ((value << (8 * byte_offset)) & mask)


DEVICE_TYPES = (*DEVICE_TYPES, Clint)


@dataclass
class GicV2(Device):
    """ARM GICv2 for one CPU: distributor at `base`, CPU interface at `cpu_base`.

    Interrupt ids: 16-31 private (the timer's PPIs), 32+ shared (board line n is id 32 + n).
    Level lines come from `set_line`; the machine asks `pending_irq()` between slices.
    """

    kind: ClassVar[str] = "arm_gic"
    description: ClassVar[str] = "ARM GICv2 interrupt controller"
    size: int = 0x10000
    cpu_base: int = 0x0801_0000
    lines: int = 288
    dist_on: bool = False
    cpu_on: bool = False
    pmr: int = 0
    bpr: int = 0
    enabled: set[int] = field(default_factory=set)
    level: set[int] = field(default_factory=set)  # lines held high by devices
    soft_pending: set[int] = field(default_factory=set)  # set through ISPENDR / SGIs
    active: set[int] = field(default_factory=set)
    priority: dict[int, int] = field(default_factory=dict)
    config: dict[int, int] = field(default_factory=dict)  # ICFGR words, kept for read-back
    SPURIOUS = 1023

    def windows(self) -> list[tuple[int, int, Access, Store]]:
        return [
            (self.base, self.size, self.read, self.write),
            (self.cpu_base, 0x10000, self.cpu_read, self.cpu_write),
        ]

    def set_line(self, irq_id: int, high: bool) -> None:
        (self.level.add if high else self.level.discard)(irq_id)

    def _candidates(self) -> list[int]:
        pending = (self.level | self.soft_pending) & self.enabled
        return sorted(pending - self.active, key=lambda i: (self.priority.get(i, 0), i))

    def pending_irq(self) -> bool:
        """An interrupt the CPU should take now (IRQ line asserted)."""
        if not (self.dist_on and self.cpu_on):
            return False
        # Asked on every slice and every DAIF write: the common "nothing pending" is set
        # arithmetic only, no sorting.
        waiting = ((self.level | self.soft_pending) & self.enabled) - self.active
        if not waiting:
            return False
        running = min((self.priority.get(i, 0) for i in self.active), default=0x100)
        threshold = min(self.pmr, running)
        return any(self.priority.get(i, 0) < threshold for i in waiting)

    def read(self, offset: int, size: int) -> int:
        return self._dist_read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self._dist_write(offset, size, value)

    def _bits(self, ids: set[int], offset: int, base: int) -> int:
        first = (offset - base) * 8
        return sum(1 << b for b in range(32) if first + b in ids)

    def _dist_read(self, offset: int, size: int) -> int:
        if offset == 0x000:
            return int(self.dist_on)
        if offset == 0x004:  # TYPER: ITLinesNumber, one CPU
            return self.lines // 32 - 1
        if offset == 0x008:  # IIDR: implementer ARM
            return 0x0200_043B
        # Set/clear register pairs read the same bits: 0x100/0x180 enable, 0x200/0x280 pending,
        # 0x300/0x380 active.
        if 0x100 <= offset < 0x400:
            sets = (self.enabled, self.level | self.soft_pending, self.active)
            return self._bits(sets[(offset >> 8) - 1], offset, offset & ~0x7F)
        if 0x400 <= offset < 0x800:
            first = offset - 0x400
            return sum(self.priority.get(first + i, 0) << (8 * i) for i in range(size))
        if 0x800 <= offset < 0xC00:
            return 0x0101_0101  # every interrupt targets CPU 0
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
        elif 0x100 <= offset < 0x180:
            self.enabled |= ids(0x100)
        elif 0x180 <= offset < 0x200:
            self.enabled -= ids(0x180)
        elif 0x200 <= offset < 0x280:
            self.soft_pending |= ids(0x200)
        elif 0x280 <= offset < 0x300:
            self.soft_pending -= ids(0x280)
        elif 0x300 <= offset < 0x380:
            self.active |= ids(0x300)
        elif 0x380 <= offset < 0x400:
            self.active -= ids(0x380)
        elif 0x400 <= offset < 0x800:
            for i in range(size):
                self.priority[offset - 0x400 + i] = (value >> (8 * i)) & 0xFF
        elif 0xC00 <= offset < 0xD00:
            self.config[offset] = value
        elif offset == 0xF00:  # SGIR: targets are always ourselves (one CPU)
            self.soft_pending.add(value & 0xF)

    def cpu_read(self, offset: int, size: int) -> int:
        if offset == 0x00:
            return int(self.cpu_on)
        if offset == 0x04:
            return self.pmr
        if offset == 0x08:
            return self.bpr
        if offset == 0x0C:  # IAR: acknowledge the best pending interrupt
            if not self.pending_irq():
                return self.SPURIOUS
            irq_id = self._candidates()[0]
            self.active.add(irq_id)
            self.soft_pending.discard(irq_id)
            return irq_id
        if offset == 0x18:
            candidates = self._candidates()
            return candidates[0] if candidates else self.SPURIOUS
        if offset == 0xFC:  # GICC_IIDR: GICv2, ARM
            return 0x0202_043B
        return 0

    def cpu_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0x00:
            self.cpu_on = bool(value & 1)
        elif offset == 0x04:
            self.pmr = value & 0xFF
        elif offset == 0x08:
            self.bpr = value & 7
        elif offset in (0x10, 0x1000):  # EOIR (and DIR when EOImode is split)
            self.active.discard(value & 0x3FF)

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


DEVICE_TYPES = (*DEVICE_TYPES, GicV2)


@dataclass
class Plic(Device):
    """SiFive PLIC as on QEMU's riscv virt board, for hart 0: context 0 is M mode, 1 is S mode.

    Layout (hw/intc/sifive_plic.c, virt's configuration): priorities at 0 (a word per source,
    3 bits), pending bits at 0x1000, per-context enable bits at 0x2000 + 0x80 * context, and per
    context threshold / claim-complete at 0x20_0000 + 0x1000 * context. Sources are level
    triggered: a line still high when its interrupt completes is pending again.
    The machine asks `context_pending()` and raises MEIP / SEIP from it.
    """

    kind: ClassVar[str] = "riscv.sifive.plic"
    description: ClassVar[str] = "SiFive PLIC (platform-level interrupt controller)"
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
    M_CONTEXT, S_CONTEXT = 0, 1

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
        # Contexts 0 and 1 are hart 0's machine (11) and supervisor (9) external interrupts.
        root.child(
            self.node_name("plic"),
            phandle=ctx.interrupt_parent,
            riscv__ndev=self.sources,
            reg=self.reg(),
            interrupts_extended=[ctx.cpu_intc, 11, ctx.cpu_intc, 9],
            interrupt_controller=None,
            compatible=["sifive,plic-1.0.0", "riscv,plic0"],
            **{"#address-cells": 0, "#interrupt-cells": 1},
        )


DEVICE_TYPES = (*DEVICE_TYPES, Plic)


@dataclass
class CfiFlash(Device):
    """A CFI NOR flash chip (x16, Intel/Sharp command set) answering through MMIO.

    It models what firmware asks of QEMU's pflash (hw/block/pflash_cfi01.c): read array, CFI
    query, read identifier, status, word and buffered program, block erase. The aarch64 board
    gives U-Boot its environment bank this way; the bank it executes from stays plain memory,
    because unicorn cannot run code from MMIO. Contents start as zeros (QEMU's empty pflash) and
    are not saved.
    """

    kind: ClassVar[str] = "cfi.pflash01"
    description: ClassVar[str] = "CFI parallel NOR flash (Intel command set)"
    size: int = 0x400_0000
    block_size: int = 0x4_0000
    mode: str = "array"  # array, query, ident, status, program, buffer_count, buffer_data
    status: int = 0x80  # SR.7: ready
    buffer_left: int = 0
    blocks: dict[int, bytearray] = field(default_factory=dict)  # written blocks only

    READ_ARRAY, READ_ARRAY_AMD, QUERY, READ_ID, READ_STATUS, CLEAR_STATUS = (
        0xFF,
        0xF0,
        0x98,
        0x90,
        0x70,
        0x50,
    )
    PROGRAM, PROGRAM_ALT, BUFFERED_PROGRAM, ERASE, CONFIRM, LOCK_SETUP = (
        0x40,
        0x10,
        0xE8,
        0x20,
        0xD0,
        0x60,
    )
    MANUFACTURER, DEVICE = 0x89, 0x18  # Intel, as QEMU's virt pflash reports
    BUFFER_BYTES = 2048

    def query_table(self) -> bytes:
        """The CFI query structure (JEDEC JESD68), one byte per 16-bit word from offset 0."""
        table = bytearray(0x40)
        blocks = self.size // self.block_size
        table[0x10:0x13] = b"QRY"
        table[0x13:0x17] = bytes([0x01, 0x00, 0x31, 0x00])  # Intel command set; ext at 0x31
        table[0x1B:0x1F] = bytes([0x45, 0x55, 0x00, 0x00])  # Vcc 4.5-5.5 V, no Vpp
        table[0x1F:0x27] = bytes([0x07, 0x07, 0x0A, 0x00, 0x04, 0x04, 0x04, 0x00])  # timeouts
        table[0x27] = self.size.bit_length() - 1  # device size: 2^n bytes
        table[0x28:0x2A] = bytes([0x01, 0x00])  # x16 interface
        table[0x2A:0x2C] = bytes([self.BUFFER_BYTES.bit_length() - 1, 0x00])
        table[0x2C] = 1  # one erase-block region
        table[0x2D:0x31] = bytes(
            [
                (blocks - 1) & 0xFF,
                (blocks - 1) >> 8,
                (self.block_size >> 8) & 0xFF,
                self.block_size >> 16,
            ]
        )
        table[0x31:0x36] = b"PRI10"  # Intel primary extended query, version 1.0
        return bytes(table)

    def _array(self, offset: int, size: int) -> int:
        block = self.blocks.get(offset // self.block_size)
        if block is None:
            return 0
        start = offset % self.block_size
        return int.from_bytes(block[start : start + size], "little")

    def _program(self, offset: int, size: int, value: int) -> None:
        index, start = divmod(offset, self.block_size)
        block = self.blocks.setdefault(index, bytearray(self.block_size))
        old = int.from_bytes(block[start : start + size], "little")
        # NOR programming only clears bits; erase sets them.
        block[start : start + size] = (old & value).to_bytes(size, "little")

    def read(self, offset: int, size: int) -> int:
        if self.mode == "array":
            # U-Boot checksums its whole 256 KiB environment a byte at a time: keep this short.
            return self._array(offset, size) if self.blocks else 0
        if self.mode == "query":
            table = self.query_table()
            word = offset // 2
            return table[word] if word < len(table) else 0
        if self.mode == "ident":
            return {0: self.MANUFACTURER, 1: self.DEVICE}.get(offset // 2 % 0x100, 0)
        return self.status

    def write(self, offset: int, size: int, value: int) -> None:
        command = value & 0xFF
        if self.mode == "program":
            self._program(offset, size, value)
            self.mode = "status"
        elif self.mode == "buffer_count":
            self.buffer_left = (value & 0xFFFF) + 1  # in words
            self.mode = "buffer_data"
        elif self.mode == "buffer_data" and self.buffer_left:
            self._program(offset, size, value)
            self.buffer_left -= max(1, size // 2)
        elif self.mode == "erase":
            if command == self.CONFIRM:
                self.blocks[offset // self.block_size] = bytearray(b"\xff" * self.block_size)
            self.mode = "status"
        elif self.mode == "lock":
            self.mode = "status"  # lock, unlock and lock-down all succeed at once
        elif command in (self.READ_ARRAY, self.READ_ARRAY_AMD):
            self.mode = "array"
        elif command == self.QUERY:
            self.mode = "query"
        elif command == self.READ_ID:
            self.mode = "ident"
        elif command == self.READ_STATUS:
            self.mode = "status"
        elif command == self.CLEAR_STATUS:
            self.status = 0x80
        elif command in (self.PROGRAM, self.PROGRAM_ALT):
            self.mode = "program"
        elif command == self.BUFFERED_PROGRAM:
            self.mode = "buffer_count"
        elif command == self.ERASE:
            self.mode = "erase"
        elif command == self.LOCK_SETUP:
            self.mode = "lock"
        elif command == self.CONFIRM:  # end of a buffered program
            self.mode = "status"

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        root.child(
            self.node_name("flash"),
            bank_width=2,  # one x16 chip
            reg=self.reg(),
            compatible="cfi-flash",
        )


DEVICE_TYPES = (*DEVICE_TYPES, CfiFlash)
