"""What the machine needs of an architecture, and what an architecture needs of the machine.

The machine (machine.py) names no architecture. What differs between boards' CPUs lives in a
`CorePlatform` (system/arch/): how a vCPU is made and reset, how it takes exceptions and
interrupts, when it waits, its device-tree nodes, and the boot conventions (image headers, where
firmware, kernel, initrd and DTB go, the registers at entry). The machine holds its vCPUs in a
list (`Machine.cpus`), so a board with several is a count, not a rewrite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

from unicorn import Uc

from qemuser.cpu import CpuSpec
from qemuser.system.devices.base import Device, DeviceHost, FdtContext
from qemuser.system.devices.char.rx import SerialPort
from qemuser.system.fdt import Node

# The slicing constants live in system/timing.py (the SMP loop, below the platforms, uses them
# too); they are re-exported here for the platforms.
from qemuser.system.timing import IDLE_MAX_NS, NEVER, SLICE

if TYPE_CHECKING:
    from qemuser.system.smp import Coherence, SharedMemory, Topology

__all__ = ["IDLE_MAX_NS", "NEVER", "SLICE"]

MiB = 1 << 20


class InterruptController(Protocol):
    """The board's interrupt controller, as the machine and devices see it.

    Devices raise board lines (their `irq` field); board line n is the controller's input
    `first_board_irq + n` (the GIC's shared interrupts start at id 32, PLIC sources are the
    lines as they are). `set_line` takes the controller's own numbering, so a CPU-private
    source (the arm timer's PPIs) uses the same call. Its device-tree node is its `fdt`; the
    cells of a device's `interrupts` property follow `FdtContext.interrupts`.
    """

    first_board_irq: int

    def set_line(self, irq: int, level: bool) -> None: ...

    def fdt(self, root: Node, ctx: FdtContext) -> None: ...


class MachineHost(DeviceHost, Protocol):
    """What a vCPU and its platform may ask of the machine around them."""

    uc: Uc  # the running vCPU's engine
    engines: list[Uc]  # one per vCPU, in CPU order (RAM shared between them: smp.py)
    current_cpu: int  # the vCPU running now (whose banked registers an access reaches)
    coherence: Coherence  # TLB and code flushes the other engines owe
    shared: SharedMemory  # maps memory every engine sees
    cpus: list[Vcpu]  # the vCPUs made so far, in CPU order
    exit_status: int | None
    intc: InterruptController
    console_device: SerialPort | None
    timer: Device | None  # a board timer device the core reads (riscv: the CLINT)
    firmware: Device | None  # a firmware interface the core calls (aarch64: PSCI)

    def fault(self, what: str) -> None:
        """Stop the run and report a guest problem as one line."""
        ...


class Vcpu(Protocol):
    """One CPU of the machine, as far as unicorn does not model it: what the run loop calls
    between slices, and the exception hook."""

    def reset(self) -> None:
        """Power-on state of what unicorn does not reset itself (before the boot registers)."""
        ...

    def on_exception(self, intno: int) -> None:
        """UC_HOOK_INTR: a trap unicorn hands over instead of vectoring it."""
        ...

    def in_wfi(self) -> bool:
        """Did the slice end because the guest waits for an interrupt?"""
        ...

    def poll(self, woke: bool) -> None:
        """Between slices: raise timer lines, take a due interrupt. `woke`: the slice ended in
        WFI and the machine idled since."""
        ...

    def ns_until_event(self, limit_ns: int) -> int:
        """Host nanoseconds until the next timer this CPU waits for (at most limit_ns)."""
        ...

    def slice_length(self) -> int:
        """Instructions to run in the next slice."""
        ...

    def recover(self, error: Exception) -> bool:
        """emu_start failed with `error`: True when this CPU turned it into a guest trap (the
        run goes on), False when the machine must stop."""
        ...


class Boot(NamedTuple):
    """What the machine loaded, for the platform to start the boot vCPU with."""

    entry: int  # first instruction: firmware if any, else the kernel
    kernel_entry: int  # 0 without -kernel
    dtb_addr: int
    bios: bool  # a -bios image was loaded
    builtin_firmware: bool  # no -bios: the platform's own firmware answers (riscv's SBI)


class CorePlatform(Protocol):
    """An architecture's part of a board: everything the machine would otherwise branch on."""

    cpu: CpuSpec
    uimage_arch: int  # U-Boot's IH_ARCH_* for this architecture
    builtin_firmware: bool  # with no -bios, a firmware of ours runs (else -kernel runs alone)
    dtb_in_ram_start_with_bios: bool  # firmware from flash expects the DTB at the start of RAM
    # Whether the run may turn off unicorn's exit check after every memory access (see
    # cpu/exit_checks.py): safe where nothing a hook does needs the engine to stop mid-block.
    skip_exit_checks: bool

    def create_vcpu(self, machine: MachineHost, index: int, new_engine: NewEngine) -> Vcpu:
        """vCPU `index` on the machine's engine (the machine then calls its reset)."""
        ...

    def fdt_context(self) -> FdtContext:
        """Phandles and conventions device nodes refer to (as QEMU numbers them)."""
        ...

    def fdt_platform(
        self, root: Node, ctx: FdtContext, cpus: int, topology: Topology | None = None
    ) -> Node:
        """Add the cpus, timer and clock nodes; return the node devices go under."""
        ...

    def map_boot_memory(self, machine: MachineHost) -> None:
        """Memory that must exist before images load (aarch64: flash bank 0 for -bios)."""
        ...

    def firmware_address(self, ram_base: int) -> int:
        """Where a raw -bios image goes."""
        ...

    def kernel_address(self, ram_base: int, behind_firmware: bool) -> int:
        """Where a raw -kernel image goes, with or without firmware in front of it."""
        ...

    def kernel_image(self, data: bytes, ram_base: int) -> tuple[int, int] | None:
        """(load address, end) of an image in this architecture's own kernel format (the
        arm64 Image header), or None for any other raw image."""
        ...

    def start(self, vcpu: Vcpu, machine: MachineHost, boot: Boot) -> None:
        """Set the boot vCPU's registers at entry (and any boot ROM it runs first)."""
        ...


class NewEngine(Protocol):
    """A fresh engine of the machine's CPU model (for probes that must not disturb the guest)."""

    def __call__(self) -> Uc: ...


def top_of_ram_dtb(ram_end: int, size: int) -> int:
    """The DTB at the top of RAM, 2 MiB aligned, as QEMU's riscv virt places it."""
    return (ram_end - size - MiB) & ~(2 * MiB - 1)
