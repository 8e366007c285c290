"""`-M virt,gic-version=3`: the GICv3 (system/devices/intc/gicv3.py).

Unit tests drive the distributor, the redistributors and the ICC system registers directly;
the device tree is compared with QEMU 7.2's node (`-M virt,gic-version=3,its=off`); Debian's
kernel boots on it with one and with four CPUs and prints the lines QEMU 7.2's run prints.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from qemuser.system.devices.intc.gicv3 import (
    ICC_CTLR,
    ICC_DIR,
    ICC_EOIR1,
    ICC_HPPIR1,
    ICC_IAR1,
    ICC_IGRPEN1,
    ICC_PMR,
    ICC_RPR,
    ICC_SGI1R,
    ICC_SRE,
    GicV3,
    is_icc,
)
from qemuser.system.dtb import parse_dtb
from tests.system.conftest import run_system
from tests.system.debian import arm64_kernel
from tests.system.initramfs import busybox_initramfs
from tests.system.test_smp_linux import JOBS, _check

SGI_FRAME = 0x10000
HANG_GUARD_S = 900  # a hung guest fails instead of hanging the suite, not a speed target


class _Host:
    """The machine as the GIC sees it: which CPU is running."""

    current_cpu = 0


def _gic(cpus: int = 1) -> GicV3:
    gic = GicV3(base=0x0800_0000, lines=256)
    gic.set_cpus(cpus)
    gic.attach(_Host())  # type: ignore[arg-type]
    gic.write(0x000, 4, 0x2)  # EnableGrp1
    for cpu in range(cpus):
        gic.sysreg_write(cpu, ICC_PMR, 0xF0)
        gic.sysreg_write(cpu, ICC_IGRPEN1, 1)
    return gic


def test_distributor_identification_as_qemu() -> None:
    gic = _gic()
    assert gic.read(0x000, 4) == 0x52  # ARE, DS, EnableGrp1
    typer = gic.read(0x004, 4)
    assert typer & 0x1F == 7  # 256 interrupt ids: Linux prints "224 SPIs implemented"
    assert typer >> 17 & 1 == 0  # no LPIs
    assert typer >> 19 & 0x1F == 0xF
    assert gic.read(0x008, 4) == 0x43B
    assert gic.read(0xFFE8, 4) == 0x3B  # PIDR2: architecture revision 3
    # Ids 0-31 are the redistributors' once affinity routing is on: RAZ/WI here.
    gic.write(0x100, 4, 0xFFFF_FFFF)
    assert gic.read(0x100, 4) == 0
    assert gic.banks[0].enabled == set()


def test_redistributor_frames() -> None:
    gic = _gic(4)
    rd = 0x20000
    for cpu in range(4):
        typer = gic.redist_read(cpu * rd + 0x8, 8)
        assert typer >> 32 == cpu  # affinity: MPIDR Aff0
        assert typer >> 8 & 0xFFFF == cpu  # processor number
        assert typer >> 4 & 1 == (cpu == 3)  # Last
        assert gic.redist_read(cpu * rd + 0xC, 4) == cpu  # the upper half, read alone
        assert gic.redist_read(cpu * rd + 0xFFE8, 4) == 0x3B
        assert gic.redist_read(cpu * rd + 0x4, 4) == 0x43B
    assert gic.redist_read(4 * rd + 0x8, 8) == 0  # past the last redistributor
    assert gic.redist_read(0x14, 4) == 0x6  # WAKER: ProcessorSleep, ChildrenAsleep
    gic.redist_write(0x14, 4, 0)
    assert gic.redist_read(0x14, 4) == 0
    # The SGI frame is each CPU's own: enabling PPI 27 on CPU 2 leaves CPU 0 alone.
    gic.redist_write(2 * rd + SGI_FRAME + 0x100, 4, 1 << 27)
    assert gic.banks[2].enabled == {27}
    assert gic.banks[0].enabled == set()
    assert gic.redist_read(2 * rd + SGI_FRAME + 0x100, 4) == 1 << 27
    assert gic.redist_read(2 * rd + SGI_FRAME + 0x180, 4) == 1 << 27
    gic.redist_write(2 * rd + SGI_FRAME + 0x41B, 1, 0xA0)  # IPRIORITYR byte of id 27
    assert gic.redist_read(2 * rd + SGI_FRAME + 0x418, 4) == 0xA000_0000
    assert gic.redist_read(2 * rd + SGI_FRAME + 0xC00, 4) == 0xAAAA_AAAA  # SGIs: edge


def test_ppi_is_taken_acknowledged_and_ended() -> None:
    gic = _gic(2)
    gic.redist_write(0x20000 + SGI_FRAME + 0x100, 4, 1 << 27)
    gic.redist_write(0x20000 + SGI_FRAME + 0x41B, 1, 0xA0)
    gic.set_ppi(1, 27, True)
    assert not gic.pending_irq(0)
    assert gic.pending_irq(1)
    assert gic.sysreg_read(1, ICC_HPPIR1) == 27
    assert gic.sysreg_read(1, ICC_IAR1) == 27
    assert gic.sysreg_read(1, ICC_RPR) == 0xA0
    assert not gic.pending_irq(1)  # active: not taken again while the line stays high
    assert gic.sysreg_read(1, ICC_IAR1) == 1023
    gic.sysreg_write(1, ICC_EOIR1, 27)
    assert gic.sysreg_read(1, ICC_RPR) == 0xFF
    assert gic.pending_irq(1)  # the level line is still high
    gic.set_ppi(1, 27, False)
    assert not gic.pending_irq(1)


def test_priority_mask_holds_an_interrupt_back() -> None:
    gic = _gic()
    gic.redist_write(SGI_FRAME + 0x100, 4, 1 << 27)
    gic.redist_write(SGI_FRAME + 0x41B, 1, 0xA0)
    gic.set_ppi(0, 27, True)
    gic.sysreg_write(0, ICC_PMR, 0xA0)  # only priorities above (numerically below) 0xA0
    assert not gic.pending_irq(0)
    assert gic.sysreg_read(0, ICC_IAR1) == 1023
    gic.sysreg_write(0, ICC_PMR, 0xF0)
    assert gic.pending_irq(0)
    gic.sysreg_write(0, ICC_IGRPEN1, 0)
    assert not gic.pending_irq(0)
    assert gic.sysreg_read(0, ICC_IGRPEN1) == 0


def test_eoi_mode_1_splits_drop_and_deactivation() -> None:
    gic = _gic()
    gic.redist_write(SGI_FRAME + 0x100, 4, 1 << 27)
    gic.set_ppi(0, 27, True)
    gic.sysreg_write(0, ICC_CTLR, 0x2)
    assert gic.sysreg_read(0, ICC_CTLR) == 0x2 | 1 << 15 | 1 << 11 | 7 << 8
    assert gic.sysreg_read(0, ICC_IAR1) == 27
    gic.sysreg_write(0, ICC_EOIR1, 27)
    assert gic.banks[0].active == {27}
    gic.sysreg_write(0, ICC_DIR, 27)
    assert gic.banks[0].active == set()
    assert gic.sysreg_read(0, ICC_SRE) == 0x7


def test_spi_follows_irouter() -> None:
    gic = _gic(4)
    spi = 32 + 1  # the UART's line
    gic.write(0x104, 4, 1 << 1)  # ISENABLER1: id 33
    gic.write(0x6000 + 8 * spi, 8, 2)  # IROUTER: Aff0 = 2
    assert gic.read(0x6000 + 8 * spi, 4) == 2
    gic.set_line(spi, True)
    assert [cpu for cpu in range(4) if gic.pending_irq(cpu)] == [2]
    gic.write(0x6000 + 8 * spi, 4, 3)  # 32-bit halves, as Linux's writeq may be split
    gic.write(0x6004 + 8 * spi, 4, 0)
    assert [cpu for cpu in range(4) if gic.pending_irq(cpu)] == [3]
    assert gic.sysreg_read(3, ICC_IAR1) == spi
    assert gic.read(0x304, 4) == 1 << 1  # ISACTIVER1
    gic.sysreg_write(3, ICC_EOIR1, spi)
    gic.set_line(spi, False)
    assert gic.read(0x304, 4) == 0
    assert not any(gic.pending_irq(cpu) for cpu in range(4))
    # Software pending through ISPENDR, cleared through ICPENDR.
    gic.write(0x204, 4, 1 << 1)
    assert gic.pending_irq(3)
    gic.write(0x284, 4, 1 << 1)
    assert not gic.pending_irq(3)


def _sgi1r(sgi: int, targets: int, irm: bool = False) -> int:
    return sgi << 24 | targets | int(irm) << 40


def test_sgi1r_reaches_its_target_list() -> None:
    gic = _gic(4)
    for cpu in range(4):
        gic.redist_write(cpu * 0x20000 + SGI_FRAME + 0x100, 4, 0xFFFF)  # SGIs enabled
    gic.sysreg_write(0, ICC_SGI1R, _sgi1r(3, 0b1010))  # CPUs 1 and 3
    assert [cpu for cpu in range(4) if gic.pending_irq(cpu)] == [1, 3]
    assert gic.sysreg_read(1, ICC_IAR1) == 3  # a GICv3 INTID names no source CPU
    gic.sysreg_write(1, ICC_EOIR1, 3)
    assert gic.redist_read(3 * 0x20000 + SGI_FRAME + 0x200, 4) == 1 << 3  # ISPENDR0
    gic.redist_write(3 * 0x20000 + SGI_FRAME + 0x280, 4, 1 << 3)  # ICPENDR0
    assert not any(gic.pending_irq(cpu) for cpu in range(4))
    # IRM: every CPU but the sender.
    gic.sysreg_write(2, ICC_SGI1R, _sgi1r(5, 0, irm=True))
    assert [cpu for cpu in range(4) if gic.pending_irq(cpu)] == [0, 1, 3]
    # Aff1 = 1 names a cluster that does not exist here: nobody.
    for cpu in (0, 1, 3):
        assert gic.sysreg_read(cpu, ICC_IAR1) == 5
        gic.sysreg_write(cpu, ICC_EOIR1, 5)
    gic.sysreg_write(0, ICC_SGI1R, _sgi1r(1, 0b1111) | 1 << 16)
    assert not any(gic.pending_irq(cpu) for cpu in range(4))


def test_icc_encodings() -> None:
    assert is_icc(*ICC_PMR[:4]) and is_icc(*ICC_IAR1[:4]) and is_icc(*ICC_SGI1R[:4])
    assert not is_icc(3, 0, 4, 2)  # DAIF's neighbourhood, not the GIC's
    assert not is_icc(3, 3, 14, 3)  # CNTV_*
    assert not is_icc(3, 4, 12, 9)  # ICH_* (EL2): not modelled


def test_device_tree_node_as_qemu(tmp_path: Path) -> None:
    for version in ("3", "max"):
        dumped = tmp_path / f"{version}.dtb"
        result = run_system(
            "aarch64", "-M", f"virt,gic-version={version},dumpdtb={dumped}", "-smp", "2"
        )
        assert result.returncode == 0, result.stderr
        tree = parse_dtb(dumped.read_bytes())
        gic = tree.find("intc@8000000")
        assert gic is not None
        assert gic.props["compatible"] == b"arm,gic-v3\0"
        assert struct.unpack(">8I", gic.props["reg"]) == (
            0, 0x0800_0000, 0, 0x10000, 0, 0x080A_0000, 0, 0xF6_0000,
        )  # fmt: skip
        assert gic.props["#redistributor-regions"] == struct.pack(">I", 1)
        assert gic.props["#interrupt-cells"] == struct.pack(">I", 3)
        assert "ranges" in gic.props and "interrupt-controller" in gic.props
        assert gic.children == []  # no ITS
        timer = tree.find("timer")
        assert timer is not None
        # The PPI flags name no CPUs under a GICv3 (QEMU: only a GICv2 has a CPU mask).
        assert struct.unpack(">12I", timer.props["interrupts"])[2::3] == (4, 4, 4, 4)


@pytest.mark.parametrize(
    ("machine", "message"),
    [
        ("virt,gic-version=host", "gic-version=host requires KVM"),
        ("virt,gic-version=1", "Invalid gic-version value\nValid values are 3, 2, host, max."),
        (
            "virt,gic-version=3,virtualization=on",
            "mach-virt: gic-version=3 with virtualization=on is not supported by qemuser "
            "(use gic-version=2)",
        ),
    ],
)
def test_refusals(machine: str, message: str) -> None:
    result = run_system("aarch64", "-M", machine, "-nographic")
    assert result.returncode == 1
    assert result.stderr == f"qemuser-system-aarch64: {message}\n"
    assert result.stdout == ""


INIT = """#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
echo "cpus: $(grep -c '^processor' /proc/cpuinfo)"
echo "gicv3 timer lines: $(grep -c 'GICv3  27 Level     arch_timer' /proc/interrupts)"
{jobs}
poweroff -f
"""


@pytest.mark.slow
@pytest.mark.parametrize("smp", [1, 4])
def test_linux_boots_on_a_gicv3(smp: int) -> None:
    # With four CPUs, test_smp_linux's pinned jobs: the scheduler's IPIs go through ICC_SGI1R.
    init = INIT.format(jobs=JOBS if smp == 4 else "")
    initrd = busybox_initramfs(f"test-gicv3-{smp}", init)
    result = run_system(
        "aarch64",
        *("-M", "virt,gic-version=3", "-cpu", "cortex-a72", "-m", "512", "-nographic"),
        *("-smp", str(smp), "-kernel", str(arm64_kernel()), "-initrd", str(initrd)),
        *("-append", "console=ttyAMA0"),
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout.replace("\r", "")
    # The lines QEMU 7.2 prints for the same command line (with its=off).
    for line in (
        "GICv3: 224 SPIs implemented",
        "GICv3: 0 Extended SPIs implemented",
        "GICv3: GICv3 features: 16 PPIs",
        *(
            f"GICv3: CPU{n}: found redistributor {n} region 0:0x{0x080A0000 + n * 0x20000:016x}"
            for n in range(smp)
        ),
    ):
        assert f"] {line}\n" in out, out[-3000:]
    if smp > 1:
        assert "smp: Brought up 1 node, 4 CPUs" in out
        _check(out)
    lines = out.split("\n")
    assert f"cpus: {smp}" in lines, out[-3000:]
    assert "gicv3 timer lines: 1" in lines  # the timer interrupt is the GICv3's
    assert "reboot: Power down" in out
