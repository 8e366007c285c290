"""NS16550A UART, as on QEMU's riscv virt board."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.char.rx import SerialInput
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node


@board_device
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
    rx: SerialInput = field(default_factory=SerialInput, repr=False, compare=False)

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
