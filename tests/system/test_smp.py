"""-smp N: QEMU's topology syntax and errors, the per-CPU state of the GIC, CLINT and PLIC, PSCI
and SBI HSM power calls, the device tree's cpu nodes (checked against QEMU 7.2's dumpdtb), and
bare-metal guests that start every CPU and hear back from each."""

from __future__ import annotations

import io

import pytest

from qemuser.system.boards import BOARDS
from qemuser.system.devices.base import NullHost
from qemuser.system.devices.firmware.psci import Psci
from qemuser.system.devices.intc.clint import Clint
from qemuser.system.devices.intc.gicv2 import GicV2
from qemuser.system.devices.intc.plic import Plic
from qemuser.system.dtb import parse_dtb
from qemuser.system.fdt import Node
from qemuser.system.machine import Machine, MachineConfig
from qemuser.system.smp import SmpError, Topology, board_topology
from tests.system.conftest import fixture, run_system


# --- -smp parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "text", "expected"),
    [
        ("aarch64", "4", Topology(4, cores=4, maxcpus=4)),
        ("aarch64", "", Topology()),
        ("aarch64", "cpus=4,clusters=2", Topology(4, clusters=2, cores=2, maxcpus=4)),
        ("aarch64", "sockets=2,cores=2,threads=1", Topology(4, sockets=2, cores=2, maxcpus=4)),
        ("aarch64", "4,maxcpus=8", Topology(4, cores=8, maxcpus=8)),
        ("aarch64", "cpus=2,cpus=3", Topology(3, cores=3, maxcpus=3)),
        ("riscv64", "cpus=4,threads=2", Topology(4, cores=2, threads=2, maxcpus=4)),
    ],
)
def test_smp_topology_is_completed_as_qemu_does(arch: str, text: str, expected: Topology) -> None:
    assert board_topology(arch, text) == expected


# Each message is what QEMU 7.2 prints for the same -smp (measured with qemu-system-*).
@pytest.mark.parametrize(
    ("arch", "text", "message"),
    [
        (
            "aarch64",
            "cpus=4,sockets=2,cores=3",
            "Invalid CPU topology: product of the hierarchy must match maxcpus: "
            "sockets (2) * clusters (1) * cores (3) * threads (0) != maxcpus (4)",
        ),
        (
            "riscv64",
            "cpus=4,sockets=2,cores=3",
            "Invalid CPU topology: product of the hierarchy must match maxcpus: "
            "sockets (2) * cores (3) * threads (0) != maxcpus (4)",
        ),
        (
            "aarch64",
            "4,maxcpus=2",
            "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
            "sockets (1) * clusters (1) * cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)",
        ),
        ("aarch64", "foo=1", "Parameter 'smp.foo' is unexpected"),
        ("aarch64", "x", "Parameter 'smp.cpus' expects integer"),
        ("riscv64", "cpus=", "Parameter 'smp.cpus' expects integer"),
        ("aarch64", "cpus=2,dies=2", "dies not supported by this machine's CPU topology"),
        ("riscv64", "cpus=4,clusters=2", "clusters not supported by this machine's CPU topology"),
        (
            "aarch64",
            "9",
            "Number of SMP CPUs requested (9) exceeds max CPUs supported by machine "
            "'mach-virt' (8)",
        ),
        (
            "aarch64",
            "600",
            "Invalid SMP CPUs 600. The max CPUs supported by machine 'virt-7.2' is 512",
        ),
        ("riscv64", "600", "Invalid SMP CPUs 600. The max CPUs supported by machine 'virt' is 512"),
        (
            "aarch64",
            "cpus=-1",
            "Invalid SMP CPUs -1. The max CPUs supported by machine 'virt-7.2' is 512",
        ),
    ],
)
def test_smp_errors_in_qemus_words(arch: str, text: str, message: str) -> None:
    with pytest.raises(SmpError) as error:
        board_topology(arch, text)
    assert str(error.value) == message


def test_smp_error_and_warning_on_the_command_line() -> None:
    result = run_system("aarch64", "-M", "virt", "-smp", "2,cores=2,threads=2")
    assert result.returncode == 1
    assert result.stderr == (
        "qemuser-system-aarch64: Invalid CPU topology: product of the hierarchy must match "
        "maxcpus: sockets (0) * clusters (1) * cores (2) * threads (2) != maxcpus (2)\n"
    )
    # QEMU warns about a zero, then goes on with the computed topology.
    result = run_system(
        "aarch64", "-M", "virt", "-smp", "0", "-kernel", str(fixture("hello-aarch64.elf"))
    )
    assert result.returncode == 0
    assert result.stdout == "hello from aarch64 virt\n"
    assert result.stderr == (
        "qemuser-system-aarch64: warning: Deprecated CPU topology (considered invalid): "
        "CPU topology parameters must be greater than zero\n"
    )


def test_riscv_smp_with_a_firmware_image_is_refused() -> None:
    result = run_system(
        "riscv64", "-M", "virt", "-smp", "2", "-bios", str(fixture("hello-riscv64.elf"))
    )
    assert result.returncode == 1
    assert result.stderr == (
        "qemuser-system-riscv64: -smp with -bios: only the built-in SBI starts other harts\n"
    )


# --- per-CPU interrupt state -------------------------------------------------------------------
class _Engine:
    def __init__(self) -> None:
        self.stops = 0

    def emu_stop(self) -> None:
        self.stops += 1


class _SmpHost(NullHost):
    """The machine as a banked device sees it: which CPU is running, and its engine."""

    def __init__(self) -> None:
        super().__init__()
        self.current_cpu = 0
        self.uc = _Engine()


def test_gicv2_banks_sgis_and_routes_spis_per_cpu() -> None:
    host = _SmpHost()
    gic = GicV2(base=0x0800_0000, cpu_base=0x0801_0000)
    gic.attach(host)
    gic.set_cpus(4)
    assert gic.read(0x004, 4) == (288 // 32 - 1) | 3 << 5  # TYPER: CPUNumber 3
    gic.write(0x000, 4, 1)
    for cpu in range(4):
        host.current_cpu = cpu
        assert gic.read(0x800, 4) == 0x0101_0101 << cpu  # ITARGETSR0 names the reader
        gic.cpu_write(0x00, 4, 1)
        gic.cpu_write(0x04, 4, 0xF0)
        gic.write(0x100, 4, 0xFFFF)  # SGIs on (banked)
    host.current_cpu = 1
    gic.write(0x100, 4, 1 << 27)  # CPU 1's virtual timer PPI only
    host.current_cpu = 0
    assert gic.read(0x100, 4) == 0xFFFF
    # SGI 3 from CPU 0 to CPUs 1 and 2 (target list): the sender's turn is ended.
    gic.write(0xF00, 4, 0b110 << 16 | 3)
    assert host.uc.stops == 1
    assert [gic.pending_irq(cpu) for cpu in range(4)] == [False, True, True, False]
    # From CPU 2 too, to all but itself (filter 1): CPU 1 has SGI 3 from two senders.
    host.current_cpu = 2
    assert gic.cpu_read(0x0C, 4) == 3 | 0 << 10  # IAR: id 3, from CPU 0
    gic.cpu_write(0x10, 4, 3)
    gic.write(0xF00, 4, 1 << 24 | 3)
    host.current_cpu = 1
    assert gic.cpu_read(0x0C, 4) == 3 | 0 << 10
    gic.cpu_write(0x10, 4, 3)
    assert gic.cpu_read(0x0C, 4) == 3 | 2 << 10  # the second sender's, still pending
    gic.cpu_write(0x10, 4, 3)
    assert gic.cpu_read(0x0C, 4) == GicV2.SPURIOUS
    # A PPI is the CPU's own line.
    gic.set_ppi(1, 27, True)
    assert gic.pending_irq(1)
    assert gic.cpu_read(0x0C, 4) == 27
    gic.cpu_write(0x10, 4, 27)
    gic.set_ppi(1, 27, False)
    host.current_cpu = 0  # CPU 2's broadcast reached CPU 0 as well
    assert gic.cpu_read(0x0C, 4) == 3 | 2 << 10
    gic.cpu_write(0x10, 4, 3)
    # An SPI goes where ITARGETSR sends it, and is active on the CPU that took it.
    gic.write(0x104, 4, 1 << 1)  # enable id 33
    gic.write(0x820, 4, 0x0000_0800)  # id 33 -> CPU 3
    gic.set_line(33, True)
    assert [gic.pending_irq(cpu) for cpu in range(4)] == [False, False, False, True]
    host.current_cpu = 3
    assert gic.cpu_read(0x0C, 4) == 3 | 2 << 10  # the SGI first: same priority, lower id
    gic.cpu_write(0x10, 4, 3)
    assert gic.cpu_read(0x0C, 4) == 33
    assert gic.read(0x304, 4) == 1 << 1  # ISACTIVER1
    gic.cpu_write(0x10, 4, 33)
    assert gic.read(0x304, 4) == 0


def test_gicv2_serves_at_most_eight_cpus() -> None:
    with pytest.raises(ValueError, match="at most 8 CPUs, not 9"):
        GicV2().set_cpus(9)


def test_clint_has_msip_and_mtimecmp_per_hart() -> None:
    host = NullHost()
    clint = Clint(base=0x0200_0000)
    clint.attach(host)
    clint.set_harts(4)
    clint.write(4 * 2, 4, 1)  # hart 2's msip
    assert [clint.software_pending(h) for h in range(4)] == [False, False, True, False]
    assert clint.read(8, 4) == 1 and clint.read(4 * 4, 4) == 0  # past the last hart: nothing
    host.clock_ns = 1_000_000  # mtime 10_000
    clint.write(Clint.MTIMECMP + 8 * 3, 4, 10_000)
    clint.write(Clint.MTIMECMP + 8 * 3 + 4, 4, 0)
    assert [clint.timer_pending(h) for h in range(4)] == [False, False, False, True]
    assert clint.read(Clint.MTIMECMP + 8 * 3, 8) == 10_000
    assert clint.read(Clint.MTIMECMP, 8) == 0xFFFF_FFFF_FFFF_FFFF


def test_plic_has_m_and_s_contexts_per_hart() -> None:
    plic = Plic(base=0x0C00_0000, sources=96)
    plic.attach(NullHost())
    plic.set_harts(2)
    plic.write(4 * 10, 4, 1)  # source 10's priority
    plic.write(Plic.ENABLE + Plic.ENABLE_STRIDE * 3, 4, 1 << 10)  # hart 1's S context
    plic.set_line(10, True)
    assert [plic.context_pending(c) for c in range(4)] == [False, False, False, True]
    assert plic.read(Plic.CONTEXT + Plic.CONTEXT_STRIDE * 3 + 4, 4) == 10  # claim
    assert not plic.context_pending(3)


class _Cpu:
    def __init__(self, mpidr: int, online: bool) -> None:
        self.mpidr, self.online = mpidr, online
        self.started: tuple[int, int] | None = None

    def power_on(self, entry: int, context_id: int) -> None:
        self.online, self.started = True, (entry, context_id)

    def power_off(self) -> None:
        self.online = False


def test_psci_cpu_on_off_and_affinity_info() -> None:
    psci = Psci()
    psci.attach(NullHost())
    cpus = [_Cpu(0, True), _Cpu(1, False)]
    psci.cpus.extend(cpus)
    minus = (1 << 64) - 1
    assert psci.call(Psci.AFFINITY_INFO_64, 1, 0) == 1  # OFF
    assert psci.call(Psci.CPU_ON_64, 0x8000_0001, 0x4008_0000, 7) == 0  # MPIDR's bit 31 aside
    assert cpus[1].started == (0x4008_0000, 7)
    assert psci.call(Psci.AFFINITY_INFO_64, 1, 0) == 0  # ON
    assert psci.call(Psci.CPU_ON_64, 1, 0, 0) == minus - 3  # ALREADY_ON
    assert psci.call(Psci.CPU_ON_64, 5, 0, 0) == minus - 1  # INVALID_PARAMETERS
    assert psci.call(Psci.AFFINITY_INFO_64, 1, 1) == minus - 1  # only level 0
    psci.call(Psci.CPU_OFF, 0, caller=1)
    assert not cpus[1].online
    assert psci.call(Psci.FEATURES, Psci.CPU_ON_64) == 0


# --- the device tree, against QEMU 7.2's -M virt,dumpdtb -smp 4 --------------------------------
def _dtb(arch: str, topology: Topology) -> Node:
    board = BOARDS[arch]["virt"]
    machine = Machine(MachineConfig(board=board, ram_size=128 << 20, smp=topology), io.BytesIO())
    return parse_dtb(machine.build_fdt(None))


def _cpu_map(node: Node, phandles: dict[int, str], path: str = "") -> list[tuple[str, str]]:
    """(path in cpu-map, cpu node name) for every leaf."""
    found = []
    for child in node.children:
        here = f"{path}/{child.name}"
        if "cpu" in child.props:
            found.append((here, phandles[_cell(child.props["cpu"])]))
        found += _cpu_map(child, phandles, here)
    return found


def _cell(value: object) -> int:
    if isinstance(value, bytes):
        return int.from_bytes(value[:4], "big")
    if isinstance(value, list):
        return int(value[0])
    return int(value)  # type: ignore[call-overload]


def _cells(value: object) -> list[int]:
    if isinstance(value, bytes):
        return [int.from_bytes(value[i : i + 4], "big") for i in range(0, len(value), 4)]
    return [int(v) for v in value]  # type: ignore[attr-defined]


def test_aarch64_dtb_cpu_nodes_and_map_as_qemus() -> None:
    root = _dtb("aarch64", board_topology("aarch64", "sockets=2,cores=2"))
    cpus = root.find("cpus")
    assert cpus is not None
    nodes = [c for c in cpus.children if c.name.startswith("cpu@")]
    assert [c.name for c in nodes] == ["cpu@0", "cpu@1", "cpu@2", "cpu@3"]
    assert [_cell(c.props["reg"]) for c in nodes] == [0, 1, 2, 3]
    phandles = {_cell(c.props["phandle"]): c.name for c in nodes}
    cpu_map = cpus.find("cpu-map")
    assert cpu_map is not None
    assert _cpu_map(cpu_map, phandles) == [
        ("/socket0/cluster0/core0", "cpu@0"),
        ("/socket0/cluster0/core1", "cpu@1"),
        ("/socket1/cluster0/core0", "cpu@2"),
        ("/socket1/cluster0/core1", "cpu@3"),
    ]
    timer = root.find("timer")
    assert timer is not None
    # QEMU: <1 13 0xf04 1 14 0xf04 1 11 0xf04 1 10 0xf04> (the PPIs reach CPUs 0-3)
    assert _cells(timer.props["interrupts"]) == [1, 13, 0xF04, 1, 14, 0xF04, 1, 11, 0xF04] + [
        1,
        10,
        0xF04,
    ]


def test_riscv_dtb_harts_and_their_interrupt_wiring_as_qemus() -> None:
    root = _dtb("riscv64", board_topology("riscv64", "4"))
    cpus = root.find("cpus")
    assert cpus is not None
    nodes = [c for c in cpus.children if c.name.startswith("cpu@")]
    # QEMU numbers the harts' phandles from the last down, each followed by its controller.
    assert [(_cell(c.props["phandle"]), _cell(c.children[0].props["phandle"])) for c in nodes] == [
        (7, 8),
        (5, 6),
        (3, 4),
        (1, 2),
    ]
    cpu_map = cpus.find("cpu-map")
    assert cpu_map is not None
    assert _cpu_map(cpu_map, {7: "cpu@0", 5: "cpu@1", 3: "cpu@2", 1: "cpu@3"}) == [
        ("/cluster0/core0", "cpu@0"),
        ("/cluster0/core1", "cpu@1"),
        ("/cluster0/core2", "cpu@2"),
        ("/cluster0/core3", "cpu@3"),
    ]
    soc = root.find("soc")
    assert soc is not None
    plic = next(c for c in soc.children if c.name.startswith("plic@"))
    clint = next(c for c in soc.children if c.name.startswith("clint@"))
    assert _cell(plic.props["phandle"]) == 9
    assert _cells(plic.props["interrupts-extended"]) == [8, 11, 8, 9, 6, 11, 6, 9] + [
        4,
        11,
        4,
        9,
        2,
        11,
        2,
        9,
    ]
    assert _cells(clint.props["interrupts-extended"]) == [8, 3, 8, 7, 6, 3, 6, 7] + [
        4,
        3,
        4,
        7,
        2,
        3,
        2,
        7,
    ]


# --- bare-metal guests that start every CPU ----------------------------------------------------
def test_aarch64_psci_starts_cpus_that_signal_with_sgis() -> None:
    result = run_system(
        "aarch64", "-M", "virt", "-smp", "4", "-kernel", str(fixture("smp-aarch64.elf"))
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"cpu {n} mpidr {n} sgi-from {n}\n" for n in range(4))
    assert result.stderr == ""


def test_riscv_hsm_starts_harts_that_signal_with_ipis() -> None:
    result = run_system(
        "riscv64", "-M", "virt", "-smp", "4", "-kernel", str(fixture("smp-riscv64.elf"))
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hart 1: seen\nhart 2: seen\nhart 3: seen\nall stopped\n"
    assert result.stderr == ""


# --- engines sharing RAM -----------------------------------------------------------------------
def test_code_written_by_one_engine_runs_on_another_only_after_its_flush() -> None:
    import struct

    from unicorn import arm64_const

    from qemuser.cpu import CPUS
    from qemuser.system.smp import Coherence, SharedMemory

    engines = [CPUS["aarch64"].new_engine() for _ in range(2)]
    memory = SharedMemory()
    memory.map(engines, 0x4000_0000, 0x10000)

    def program(value: int) -> bytes:  # movz x0, #value; nop; nop
        return struct.pack("<III", 0xD280_0000 | value << 5, 0xD503_201F, 0xD503_201F)

    def run(engine: object) -> int:
        engine.emu_start(0x4000_0000, 0xFFFF_FFFF_FFFF_FFF0, count=2)  # type: ignore[attr-defined]
        return engine.reg_read(arm64_const.UC_ARM64_REG_X0)  # type: ignore[attr-defined]

    engines[0].mem_write(0x4000_0000, program(1))
    assert run(engines[1]) == 1  # engine 1 has translated it
    engines[0].mem_write(0x4000_0000, program(2))  # RAM is shared: engine 0 sees the new code
    assert run(engines[0]) == 2
    assert run(engines[1]) == 1  # engine 1 still runs its stale translation
    coherence = Coherence(engines)
    coherence.code_changed(0)  # what IC IALLUIS / SBI remote fence.i record
    coherence.catch_up(1)
    assert run(engines[1]) == 2
