"""Debian's EDK2 (qemu-efi-aarch64) on the aarch64 virt board: from -bios and from pflash0 /
pflash1 (QEMU's documented UEFI command line), to the UEFI shell, with variables written
through the CFI flash into the pflash1 image and found again at the next boot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.system.interactive import ConsoleSession

QEMU_EFI = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
# A vendor namespace of our own: EFI_GLOBAL_VARIABLE's refuses names the spec does not define.
VENDOR_GUID = "5b3f1ea0-8f0a-4f5d-9b7c-1c2e3d4f5a6b"

pytestmark = pytest.mark.slow


def shell(*args: str) -> ConsoleSession:
    # No NIC (QEMU's default one would make EDK2 try PXE and HTTP boot before its shell).
    session = ConsoleSession("aarch64", "-net", "none", "-M", *args)
    session.expect('BdsDxe: starting Boot0001 "EFI Internal Shell"', timeout=600)
    session.expect("Shell> ", timeout=300)
    return session


def power_off(session: ConsoleSession) -> int:
    session.type("reset -s\r")  # the shell's shutdown: EFI ResetSystem -> PSCI SYSTEM_OFF
    return session.wait(120)


@pytest.mark.skipif(not QEMU_EFI.exists(), reason="qemu-efi-aarch64 not installed")
def test_edk2_from_bios_reaches_the_shell() -> None:
    session = shell("virt", "-cpu", "cortex-a72", "-m", "512", "-nographic", "-bios",
                    str(QEMU_EFI))  # fmt: skip
    try:
        assert "UEFI firmware (version" in session.text()
        assert power_off(session) == 0
    finally:
        session.close()


@pytest.mark.skipif(not AAVMF_CODE.exists(), reason="qemu-efi-aarch64 not installed")
def test_edk2_from_pflash_keeps_its_variables(tmp_path: Path) -> None:
    variables = tmp_path / "efivars.fd"
    shutil.copy(AAVMF_VARS, variables)
    args = ("virt,pflash0=rom,pflash1=efivars", "-cpu", "cortex-a72", "-m", "512",
            "-nographic", "-blockdev",
            f"node-name=rom,driver=file,filename={AAVMF_CODE},read-only=true", "-blockdev",
            f"node-name=efivars,driver=file,filename={variables}")  # fmt: skip
    session = shell(*args)
    try:
        session.type(f'setvar QemuserMark -guid {VENDOR_GUID} -bs -rt -nv =L"kept"\r')
        session.expect("Shell> ")
        assert power_off(session) == 0
    finally:
        session.close()
    stored = variables.read_bytes()
    assert "QemuserMark".encode("utf-16-le") in stored
    session = shell(*args)
    try:
        session.type(f"dmpstore QemuserMark -guid {VENDOR_GUID}\r")
        session.expect("Shell> ")
        plain = re.sub(r"\x1b\[[0-9;=]*[A-Za-z]", "", session.text())  # the shell's colours
        assert f"Variable NV+RT+BS '{VENDOR_GUID.upper()}:QemuserMark' DataSize = 0x08" in plain
        assert power_off(session) == 0
    finally:
        session.close()


@pytest.mark.skipif(not QEMU_EFI.exists(), reason="qemu-efi-aarch64 not installed")
def test_edk2_boots_a_kernel_given_through_fw_cfg() -> None:
    from tests.system.debian import arm64_kernel

    kernel = arm64_kernel()
    session = ConsoleSession("aarch64", "-net", "none", "-M", "virt", "-cpu", "cortex-a72",
                             "-m", "512", "-nographic", "-bios", str(QEMU_EFI),
                             "-kernel", str(kernel),
                             "-append", "console=ttyAMA0 panic=-1 qemuser.mark=fwcfg")  # fmt: skip
    try:
        session.expect("EFI stub: Booting Linux Kernel...", timeout=600)
        session.expect("Kernel command line: console=ttyAMA0 panic=-1 qemuser.mark=fwcfg")
        session.expect("Kernel panic - not syncing: VFS: Unable to mount root fs", timeout=300)
        assert session.wait(120) == 0  # panic=-1 reboots: the run ends (as with -no-reboot)
    finally:
        session.close()
