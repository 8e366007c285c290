"""Several vCPUs on one machine: QEMU's -smp syntax, memory shared by the vCPUs' engines, and
the run loop that runs them in turns on the machine's thread, as QEMU's single-threaded TCG
(round-robin) does.

A unicorn engine is one CPU. Each vCPU has its own engine; guest RAM is one host mapping
(mmap) given to every engine with `mem_map_ptr`, and every MMIO window is mapped into every
engine. Only one engine runs at a time, so "the current vCPU" (`Machine.current_cpu`) is well
defined: devices with per-CPU (banked) registers, the GIC's CPU interface, ask it.

Engines keep private TLBs and translation caches. What one CPU's broadcast maintenance would do
to the others (arm64 `tlbi ...is`, `ic ialluis`/`ic ivau`; riscv SBI remote sfence.vma /
fence.i) is recorded in `Coherence` and done to each other engine before it next runs: it is
not running meanwhile, so flushing it late is the same as flushing it at once.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Any, Protocol

from unicorn import UC_PROT_ALL, Uc, UcError
from unicorn import unicorn_const as uc_const

from qemuser.cpu.exit_checks import ExitChecks
from qemuser.system.errors import MachineError
from qemuser.system.fdt import Node
from qemuser.system.timing import IDLE_MAX_NS, NEVER


class SmpMachine(Protocol):
    """What the SMP run loop uses of the machine (system/machine.py's Machine)."""

    cpus: list
    coherence: Coherence
    platform: Any
    uc: Uc
    io: Any
    debugger: Any
    checkpoint: Any
    console_input: Any
    current_cpu: int
    exit_status: int | None
    fault_message: str

    def _flush_console(self) -> None: ...
    def poll_console_input(self) -> None: ...


# Longest turn of one vCPU while others are runnable: bounds how late a CPU sees another's IPI
# or store (a spinning waiter burns at most this many instructions before the owner runs).
TURN = 50_000  # measured: 10k and 200k both boot arm64 Linux -smp 4 slower

_SMP_KEYS = ("cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus")


class SmpError(ValueError):
    """An -smp value QEMU refuses, with QEMU's message."""


@dataclass(frozen=True)
class SmpLimits:
    """What a machine's CPU topology allows (QEMU's MachineClass smp_props and max_cpus)."""

    machine: str  # the name QEMU's messages give the machine
    max_cpus: int
    clusters: bool = False
    dies: bool = False


@dataclass(frozen=True)
class Topology:
    """A parsed -smp: the CPUs started and the hierarchy they sit in."""

    cpus: int = 1
    sockets: int = 1
    dies: int = 1
    clusters: int = 1
    cores: int = 1
    threads: int = 1
    maxcpus: int = 1

    def place(self, cpu: int) -> tuple[int, int, int, int]:
        """(socket, cluster, core, thread) of CPU `cpu` (QEMU's numbering: threads innermost)."""
        per_core = self.threads
        per_cluster = self.cores * per_core
        per_socket = self.clusters * self.dies * per_cluster
        return (
            cpu // per_socket,
            cpu // per_cluster % self.clusters,
            cpu // per_core % self.cores,
            cpu % self.threads,
        )


def _signed32(value: int) -> int:
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value & 0x8000_0000 else value


def parse_smp(text: str, limits: SmpLimits, warn: list[str] | None = None) -> Topology:
    """Parse -smp as QEMU 7.2 does (hw/core/machine-smp.c): "N" or key=value pairs, missing
    values computed preferring cores over sockets; SmpError with QEMU's message."""
    given: dict[str, int] = {}
    for index, part in enumerate(text.split(",") if text else []):
        key, eq, value = part.partition("=")
        if not eq:
            if index != 0:
                raise SmpError(f"Parameter 'smp.{key}' is unexpected")  # QEMU: same words
            key, value = "cpus", part
        if key not in _SMP_KEYS:
            raise SmpError(f"Parameter 'smp.{key}' is unexpected")
        try:
            number = int(value, 0)
        except ValueError:
            raise SmpError(f"Parameter 'smp.{key}' expects integer") from None
        given[key] = number & 0xFFFF_FFFF  # QEMU keeps them as unsigned 32-bit
    if any(v == 0 for v in given.values()) and warn is not None:
        warn.append(
            "Deprecated CPU topology (considered invalid): "
            "CPU topology parameters must be greater than zero"
        )
    cpus, sockets = given.get("cpus", 0), given.get("sockets", 0)
    dies, clusters = given.get("dies", 0), given.get("clusters", 0)
    cores, threads, maxcpus = (
        given.get("cores", 0),
        given.get("threads", 0),
        given.get("maxcpus", 0),
    )
    if not limits.dies and dies > 1:
        raise SmpError("dies not supported by this machine's CPU topology")
    if not limits.clusters and clusters > 1:
        raise SmpError("clusters not supported by this machine's CPU topology")
    dies = dies or 1
    clusters = clusters or 1
    if cpus == 0 and maxcpus == 0:
        sockets, cores, threads = sockets or 1, cores or 1, threads or 1
    else:
        maxcpus = maxcpus or cpus
        if cores == 0:  # since QEMU 6.2 cores are preferred over sockets
            sockets, threads = sockets or 1, threads or 1
            cores = maxcpus // (sockets * dies * clusters * threads)
        elif sockets == 0:
            threads = threads or 1
            sockets = maxcpus // (dies * clusters * cores * threads)
        if threads == 0:
            threads = maxcpus // (sockets * dies * clusters * cores)
    maxcpus = maxcpus or sockets * dies * clusters * cores * threads
    cpus = cpus or maxcpus
    hierarchy = f"sockets ({sockets})"
    if limits.dies:
        hierarchy += f" * dies ({dies})"
    if limits.clusters:
        hierarchy += f" * clusters ({clusters})"
    hierarchy += f" * cores ({cores}) * threads ({threads})"
    if sockets * dies * clusters * cores * threads != maxcpus:
        raise SmpError(
            "Invalid CPU topology: product of the hierarchy must match maxcpus: "
            f"{hierarchy} != maxcpus ({maxcpus})"
        )
    if maxcpus < cpus:
        raise SmpError(
            "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
            f"{hierarchy} == maxcpus ({maxcpus}) < smp_cpus ({cpus})"
        )
    if maxcpus > limits.max_cpus:
        raise SmpError(
            f"Invalid SMP CPUs {_signed32(maxcpus)}. The max CPUs supported by machine "
            f"'{limits.machine}' is {limits.max_cpus}"
        )
    return Topology(cpus, sockets, dies, clusters, cores, threads, maxcpus)


# --- memory shared by every engine ------------------------------------------------------------
class SharedMemory:
    """Host pages mapped at the same guest address in every engine (RAM, boot ROM, flash)."""

    def __init__(self) -> None:
        self._buffers: list[mmap.mmap] = []  # must outlive the engines that point into them

    def map(self, engines: list[Uc], base: int, size: int) -> None:
        try:
            buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except OSError:
            raise UcError(uc_const.UC_ERR_NOMEM) from None  # reported as the engines' own
        self._buffers.append(buffer)
        address = _buffer_address(buffer)
        for uc in engines:
            uc.mem_map_ptr(base, size, UC_PROT_ALL, address)


def _buffer_address(buffer: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


# --- coherence between engines ----------------------------------------------------------------
def flush_tlb(uc: Uc) -> None:
    # The binding has ctl_flush_tb but no TLB counterpart: the same control call, by hand.
    uc._Uc__ctl_w(uc_const.UC_CTL_TLB_FLUSH)  # type: ignore[attr-defined]


class Coherence:
    """Maintenance one engine owes the others: done to each before its next turn."""

    def __init__(self, engines: list[Uc]) -> None:
        self.engines = engines
        self.stale_tlb = [False] * len(engines)
        self.stale_code = [False] * len(engines)

    def tlb_invalidated(self, by: int) -> None:
        """CPU `by` broadcast a TLB invalidation."""
        for index in range(len(self.engines)):
            if index != by:
                self.stale_tlb[index] = True

    def code_changed(self, by: int) -> None:
        """CPU `by` broadcast an instruction-cache invalidation (code was written)."""
        for index in range(len(self.engines)):
            if index != by:
                self.stale_code[index] = True

    def catch_up(self, index: int) -> None:
        uc = self.engines[index]
        if self.stale_code[index]:
            self.stale_code[index] = False
            uc.ctl_flush_tb()
        if self.stale_tlb[index]:
            self.stale_tlb[index] = False
            flush_tlb(uc)


class SmpVcpu(Protocol):
    """What the SMP run loop needs of a vCPU beyond `Vcpu` (arch/common.py)."""

    uc: Uc
    online: bool  # powered on (PSCI CPU_ON / SBI hart_start), else parked

    def in_wfi(self) -> bool: ...
    def poll(self, woke: bool) -> None: ...
    def ns_until_event(self, limit_ns: int) -> int: ...
    def slice_length(self) -> int: ...
    def recover(self, error: Exception) -> bool: ...
    def wakeup_pending(self) -> bool:
        """An interrupt (or timer) that ends this vCPU's WFI is due."""
        ...

    def pc(self) -> int: ...


def run_smp(machine: SmpMachine) -> int:
    """The run loop of a machine with several vCPUs: each online vCPU that is not waiting in
    WFI runs a turn; when all wait, the machine sleeps until the first timer or input."""
    cpus: list[SmpVcpu] = machine.cpus  # type: ignore[assignment]
    coherence: Coherence = machine.coherence
    if machine.platform.skip_exit_checks:
        for vcpu in cpus:
            ExitChecks(vcpu.uc).skip()
    waiting = [False] * len(cpus)  # in WFI with nothing to wake it yet
    machine.fault_message = ""
    while machine.exit_status is None:
        if machine.checkpoint is not None:
            machine.checkpoint(machine)
            if machine.exit_status is not None:
                break
        ran = False
        for index, vcpu in enumerate(cpus):
            if not vcpu.online or machine.exit_status is not None:
                continue
            if waiting[index]:
                if not vcpu.wakeup_pending():
                    continue
                waiting[index] = False
                machine.current_cpu, machine.uc = index, vcpu.uc
                vcpu.poll(True)
            machine.current_cpu, machine.uc = index, vcpu.uc
            coherence.catch_up(index)
            ran = True
            count = min(vcpu.slice_length(), TURN)
            if machine.debugger is not None:  # GDB (system/gdbstub.py): 0 skips this turn
                count = machine.debugger.before_slice(machine, count)
                if machine.exit_status is not None:
                    break
                if not count:
                    continue
            pc = vcpu.pc()
            try:
                vcpu.uc.emu_start(pc, NEVER, count=count)
            except UcError as exc:
                if machine.exit_status is None and not vcpu.recover(exc):
                    machine._flush_console()
                    raise MachineError(
                        f"guest stopped: {exc} at pc 0x{pc:x} (CPU {index})"
                    ) from None
            if machine.debugger is not None and machine.exit_status is None:
                machine.debugger.after_slice(machine)
            if machine.exit_status is not None:
                break
            if not vcpu.online:
                continue  # it turned itself off (PSCI CPU_OFF, SBI hart_stop)
            if vcpu.in_wfi():
                waiting[index] = True
            else:
                vcpu.poll(False)
        machine._flush_console()
        if machine.exit_status is not None:
            break
        if not ran:
            _idle(machine, cpus)
        machine.poll_console_input()
        machine.io.run_pending()
    machine.current_cpu, machine.uc = 0, cpus[0].uc
    machine._flush_console()
    if machine.fault_message:
        raise MachineError(machine.fault_message)
    assert machine.exit_status is not None
    return machine.exit_status


def _idle(machine: SmpMachine, cpus: list[SmpVcpu]) -> None:
    """Every online vCPU waits for an interrupt: sleep until the first one's next timer."""
    wait_ns = IDLE_MAX_NS
    for vcpu in cpus:
        if vcpu.online:
            wait_ns = vcpu.ns_until_event(wait_ns)
    if wait_ns <= 0:
        return
    fds = machine.console_input.wait_fds() if machine.console_input is not None else []
    machine.io.wait(wait_ns / 1e9, fds)


def add_cpu_map(cpus_node: Node, topology: Topology, phandles: list[int], arm: bool = True) -> None:
    """The /cpus/cpu-map node QEMU writes: socketS/clusterC/coreN[/threadT] on arm's virt,
    clusterS/coreN (a cluster per socket, cores numbered within it) on riscv's."""
    cpu_map = cpus_node.child("cpu-map")
    for index, phandle in enumerate(phandles):
        socket, cluster, core, thread = topology.place(index)
        if arm:
            path = [f"socket{socket}", f"cluster{cluster}", f"core{core}"]
            if topology.threads > 1:
                path.append(f"thread{thread}")
        else:
            path = [f"cluster{socket}", f"core{index % (topology.maxcpus // topology.sockets)}"]
        leaf = cpu_map
        for name in path:
            leaf = leaf.find(name) or leaf.child(name)
        leaf.set("cpu", phandle)


# QEMU 7.2's limits for the virt boards (hw/arm/virt.c, hw/riscv/virt.c): arm's topology has
# clusters; with a GICv2 machvirt_init allows 8 CPUs (the GIC's limit), riscv's machine 512.
_LIMITS = {
    "aarch64": SmpLimits("virt-7.2", 512, clusters=True),
    "riscv64": SmpLimits("virt", 512),
}
GICV2_MAX_CPUS = 8


def board_topology(arch: str, text: str, warn: list[str] | None = None) -> Topology:
    """-smp for a virt board of `arch`: QEMU's parse and limits, then ours (SmpError)."""
    topology = parse_smp(text, _LIMITS[arch], warn)
    if arch == "aarch64" and topology.maxcpus > GICV2_MAX_CPUS:
        raise SmpError(
            f"Number of SMP CPUs requested ({topology.maxcpus}) exceeds max CPUs supported by "
            f"machine 'mach-virt' ({GICV2_MAX_CPUS})"
        )
    if arch == "riscv64" and topology.sockets > 1:
        # QEMU's riscv virt gives each socket its own CLINT and PLIC: not modelled here.
        raise SmpError(f"-smp sockets={topology.sockets}: only one socket is supported")
    return topology
