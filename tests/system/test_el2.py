"""`-M virt,virtualization=on`: the aarch64 virt board's CPUs start at EL2, as QEMU's do.

A bare-metal guest checks the exception levels themselves (its output is QEMU 7.2's, line for
line, with -cpu cortex-a72 and max); EDK2 reaches its shell at EL2; Debian's kernel boots at EL2
(PSCI over SMC, KVM's hyp mode initialised) with one and with four CPUs, and on -cpu max, whose
VHE the core cannot provide, as an nVHE host.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from unicorn import arm64_const as a64

from qemuser.cpu import CPUS
from qemuser.system.arch.aarch64 import ID_AA64MMFR1_EL1, Registers, hide_vhe
from qemuser.system.dtb import parse_dtb
from tests.system.conftest import fixture, run_system
from tests.system.debian import arm64_kernel
from tests.system.initramfs import busybox_initramfs
from tests.system.interactive import ConsoleSession

QEMU_EFI = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
HANG_GUARD_S = 900  # a hung guest fails instead of hanging the suite, not a speed target

# What el2-aarch64.S prints; QEMU 7.2 prints the same for the same command line.
EL2_OUTPUT = [
    "CurrentEL=2",
    "EL2 irq id=0x001a from EL2",  # CNTHP (PPI 26) taken at EL2 itself (HCR_EL2.IMO)
    "eret to EL1",
    "CurrentEL=1",
    "EL1 sync EC=0x0015 ISS=0x0011",  # SVC: EL1's own table
    "back from svc",
    "EL2 sync EC=0x0016 ISS=0x0022 from EL1",  # HVC: EL2's table, lower-EL offset
    "back from hvc",
    "EL2 irq id=0x001b from EL1",  # EL1's virtual timer, routed to EL2 by IMO
    "EL1 powers off",  # PSCI SYSTEM_OFF over SMC
]


@pytest.mark.parametrize("cpu", ["cortex-a72", "max"])
def test_bare_metal_guest_runs_at_el2_and_takes_hvc_and_irqs_there(cpu: str) -> None:
    elf = fixture("el2-aarch64.elf")
    result = run_system("aarch64", "-M", "virt,virtualization=on", "-cpu", cpu, "-nographic",
                        "-kernel", str(elf))  # fmt: skip
    assert result.stdout.splitlines() == EL2_OUTPUT
    assert (result.returncode, result.stderr) == (0, "")


def test_vhe_is_hidden_from_a_max_cpu_and_the_guest_reads_it_so() -> None:
    spec = CPUS["aarch64"]
    uc = spec.new_engine(spec.model("max"))
    regs = Registers(uc)
    before = regs.cp_read(ID_AA64MMFR1_EL1)
    assert (before >> 8) & 0xF == 1  # FEAT_VHE, which the core then does not implement
    assert hide_vhe(regs)
    uc.ctl_flush_tb()
    uc.mem_map(0x4000_0000, 0x1000)
    uc.mem_write(0x4000_0000, struct.pack("<2I", 0xD5380720, 0xD503201F))  # mrs x0, mmfr1; nop
    uc.emu_start(0x4000_0000, 0x4000_0004)
    assert uc.reg_read(a64.UC_ARM64_REG_X0) == before & ~(0xF << 8)  # only VH changed


def test_without_virtualization_the_same_guest_starts_at_el1() -> None:
    elf = fixture("el2-aarch64.elf")
    result = run_system("aarch64", "-M", "virt,virtualization=off", "-nographic",
                        "-kernel", str(elf))  # fmt: skip
    # At EL1, VBAR_EL2 is undefined: the guest's first EL2 access traps to EL1, which has no
    # table yet.
    assert result.stdout.splitlines() == ["CurrentEL=1"]
    assert result.returncode == 1
    assert "exception 1 with no EL1 vector table" in result.stderr


def test_virtualization_takes_a_boolean_and_secure_is_still_refused() -> None:
    result = run_system("aarch64", "-M", "virt,virtualization=maybe", "-nographic")
    assert result.returncode == 1
    assert result.stderr == (
        "qemuser-system-aarch64: Parameter 'virtualization' expects 'on' or 'off'\n"
    )
    result = run_system("aarch64", "-M", "virt,virtualization=on,secure=on", "-nographic")
    assert result.returncode == 1
    assert result.stderr == (
        "qemuser-system-aarch64: mach-virt: qemuser does not support providing Security "
        "extensions to the guest CPU\n"
    )


def test_device_tree_has_psci_over_smc(tmp_path: Path) -> None:
    trees = {}
    for value in ("off", "on"):
        dumped = tmp_path / f"{value}.dtb"
        result = run_system("aarch64", "-M", f"virt,virtualization={value},dumpdtb={dumped}")
        assert result.returncode == 0, result.stderr
        trees[value] = parse_dtb(dumped.read_bytes())
    for value, method in (("off", b"hvc\0"), ("on", b"smc\0")):
        psci = trees[value].find("psci")
        assert psci is not None
        assert psci.props["method"] == method
    # The timer lists the EL2 physical timer (PPI 10 = INTID 26) either way, as QEMU's does;
    # the GIC node claims no virtualization extensions (no GICH/GICV regions): there are none.
    for value in ("off", "on"):
        timer = trees[value].find("timer")
        assert timer is not None
        cells = struct.unpack(">12I", timer.props["interrupts"])
        assert cells[1::3] == (13, 14, 11, 10)
        gic = trees[value].find("intc@8000000")
        assert gic is not None
        assert len(gic.props["reg"]) == 32 and "interrupts" not in gic.props


INIT = """#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
echo "cpus: $(grep -c '^processor' /proc/cpuinfo)"
poweroff -f
"""


def _boot(cpu: str, smp: int) -> str:
    initrd = busybox_initramfs("test-el2", INIT)
    result = run_system(
        "aarch64",
        *("-M", "virt,virtualization=on", "-cpu", cpu, "-m", "512", "-nographic"),
        *("-smp", str(smp), "-kernel", str(arm64_kernel()), "-initrd", str(initrd)),
        *("-append", "console=ttyAMA0"),
        timeout=HANG_GUARD_S,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stdout[-3000:]
    out = result.stdout
    # QEMU 7.2 prints these two lines for the same command line.
    assert "CPU: All CPU(s) started at EL2" in out
    assert "kvm [1]: Hyp mode initialized successfully" in out
    assert f"cpus: {smp}" in out.replace("\r", "").split("\n")
    assert "reboot: Power down" in out
    return out


@pytest.mark.slow
def test_linux_boots_at_el2() -> None:
    out = _boot("cortex-a72", 1)
    assert "psci: PSCIv1.0 detected in firmware." in out  # found over SMC


@pytest.mark.slow
def test_linux_boots_four_cpus_at_el2() -> None:
    out = _boot("cortex-a72", 4)
    assert "smp: Brought up 1 node, 4 CPUs" in out
    for n in (1, 2, 3):
        # Each CPU's own MPIDR, although Linux copies it into VMPIDR_EL2 from EL2.
        assert f"CPU{n}: Booted secondary processor 0x000000000{n} [0x410fd083]" in out


@pytest.mark.slow
def test_linux_on_cpu_max_runs_as_an_nvhe_host() -> None:
    # -cpu max offers VHE, which unicorn's core lacks (no E2H redirection, no *_EL12
    # registers): qemuser hides it, and Linux keeps EL2 for KVM's nVHE hypervisor.
    out = _boot("max", 1)
    assert "Virtualization Host Extensions" not in out


@pytest.mark.slow
@pytest.mark.skipif(not QEMU_EFI.exists(), reason="qemu-efi-aarch64 not installed")
def test_edk2_reaches_its_shell_at_el2() -> None:
    session = ConsoleSession("aarch64", "-net", "none", "-M", "virt,virtualization=on",
                             "-cpu", "cortex-a72", "-m", "512", "-nographic",
                             "-bios", str(QEMU_EFI))  # fmt: skip
    try:
        session.expect('BdsDxe: starting Boot0001 "EFI Internal Shell"', timeout=600)
        session.expect("Shell> ", timeout=300)
        session.type("reset -s\r")  # EFI ResetSystem -> PSCI SYSTEM_OFF, over SMC here
        assert session.wait(120) == 0
    finally:
        session.close()
