"""Debian's arm64 kernel on the aarch64 virt board."""

from __future__ import annotations

import pytest

from tests.system.conftest import run_system
from tests.system.debian import arm64_kernel


@pytest.mark.slow
def test_debian_kernel_boots_to_root_mount_and_reboots() -> None:
    # No initramfs yet: the kernel must get through GIC, arch timer, PL011 and PSCI set-up to
    # the root mount, panic there, and with panic=-1 reboot through PSCI (ends the run).
    kernel = arm64_kernel()
    result = run_system(
        "aarch64",
        "-M",
        "virt",
        "-m",
        "512",
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyAMA0 panic=-1",
        timeout=300,
    )
    lines = result.stdout.splitlines()
    assert any("Machine model: linux,dummy-virt" in x for x in lines)  # QEMU's tree's model
    assert any("psci: PSCIv1.0 detected in firmware." in x for x in lines)
    assert any("arch_timer: cp15 timer(s) running at 62.50MHz (virt)." in x for x in lines)
    assert any("ttyAMA0 at MMIO 0x9000000 (irq = " in x for x in lines)
    assert any(
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)" in x
        for x in lines
    )
    assert result.returncode == 0
