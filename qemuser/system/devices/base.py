"""The base of every device model: an MMIO window, registers, an interrupt line, a device-tree
node. The models themselves are one per file in the packages beside this one, by kind.

Nothing here knows the board: a device talks to the machine only through `DeviceHost` (console
bytes, power-off, interrupt lines, the guest clock). Register behaviour is plain Python, so the
unit tests drive `read`/`write` directly without unicorn.
"""

from __future__ import annotations

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
    cpu_intcs: list[int] = field(default_factory=list)  # riscv: every hart's, in hart order
    next_phandle: int = 0x100
    root: Node | None = None  # the tree's root, for nodes a board keeps outside its bus (/soc)

    def interrupts(self, irq: int) -> list[int]:
        """A device's `interrupts` property for board line `irq` (level-triggered)."""
        return [0, irq, 4] if self.gic else [irq]

    def phandle(self) -> int:
        """A fresh phandle for a node that others refer to."""
        self.next_phandle += 1
        return self.next_phandle


@dataclass
class Device:
    """Base of every device: an MMIO window at `base` of `size` bytes (size 0: no MMIO)."""

    kind: ClassVar[str] = "device"  # the name -device help lists it under
    description: ClassVar[str] = ""
    provides_bus: ClassVar[str] = ""  # the bus pluggable devices find here (see plug())
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

    def plug(self, device: object) -> object:
        """Attach a pluggable device to the bus this device provides; ValueError when full."""
        raise ValueError(f"{self.kind} provides no bus")

    def node_name(self, stem: str) -> str:
        return f"{stem}@{self.base:x}"

    def reg(self) -> list[int]:
        return u64_cells(self.base) + u64_cells(self.size)
