"""ARM PrimeCell UART (PL011), as on QEMU's aarch64 virt board."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.char.rx import SerialInput
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node


@board_device
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
    rx: SerialInput = field(default_factory=SerialInput, repr=False, compare=False)

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

    def take_input(self) -> int | None:
        """One received byte, as polling firmware reads it (None when none is waiting)."""
        if not self.rx.queue:
            return None
        value = self.rx.queue.popleft()
        self._update()
        return value

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
