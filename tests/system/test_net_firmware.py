"""Firmware sees the NIC as under QEMU 7.2 (each transcript below was compared by hand with
qemu-system-aarch64/-riscv64's for the same command line; they differ only in the DHCP time):

- Debian's U-Boot finds virtio-net and `dhcp` gets 10.0.2.15 from libslirp; libslirp's DHCP
  names no boot file, so U-Boot tries TFTP for its default name and the server refuses it.
  qemu-riscv64_smode's U-Boot probes no PCI NIC (QEMU's says "No ethernet found." too), so
  riscv64 uses virtio-net-device on virtio-mmio.
- EDK2 (qemu-efi-aarch64) with a virtio-net-pci NIC and no disk starts PXE over IPv4 first;
  the offer names no boot file, so the probe fails with the same words as QEMU's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.system.debian import u_boot
from tests.system.interactive import ConsoleSession

QEMU_EFI = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")


def u_boot_dhcp(arch: str, args: tuple[str, ...]) -> list[str]:
    """Stop autoboot, run `dhcp`, power off; the console lines from `=> dhcp` on."""
    session = ConsoleSession(arch, "-M", "virt", "-nographic", *args,
                             "-netdev", "user,id=n0")  # fmt: skip
    try:
        session.expect("Hit any key to stop autoboot:")
        session.type(" ")
        session.expect("=> ")
        session.type("dhcp\r")
        session.expect("Not retrying...")
        session.expect("=> ")
        session.type("poweroff\r")
        assert session.wait() == 0
        lines = session.lines()
        assert session.stderr() == ""
    finally:
        session.close()
    return lines


def check_dhcp_transcript(lines: list[str], nic: str, load_address: str) -> None:
    assert f"Net:   eth0: {nic}" in lines, lines
    at = lines.index("=> dhcp")
    transcript = lines[at + 1 :]
    assert transcript[0] == "BOOTP broadcast 1"
    assert re.fullmatch(r"DHCP client bound to address 10\.0\.2\.15 \(\d+ ms\)", transcript[1])
    assert transcript[2:] == [
        "*** Warning: no boot file name; using '0A00020F.img'",
        f"Using {nic} device",
        "TFTP from server 10.0.2.2; our IP address is 10.0.2.15",
        "Filename '0A00020F.img'.",
        f"Load address: {load_address}",
        "Loading: *\b",
        "TFTP error: 'Access violation' (2)",
        "Not retrying...",
        "=> poweroff",
        "poweroff ...",
        "",
    ]


def test_aarch64_u_boot_dhcp_over_virtio_net_pci() -> None:
    lines = u_boot_dhcp("aarch64", ("-bios", str(u_boot("qemu_arm64")),
                                    "-device", "virtio-net-pci,netdev=n0"))  # fmt: skip
    check_dhcp_transcript(lines, "virtio-net#32", "0x40200000")


def test_riscv64_u_boot_smode_dhcp_over_virtio_mmio() -> None:
    lines = u_boot_dhcp("riscv64", ("-kernel", str(u_boot("qemu-riscv64_smode")),
                                    "-device", "virtio-net-device,netdev=n0"))  # fmt: skip
    check_dhcp_transcript(lines, "virtio-net#0", "0x80200000")


@pytest.mark.slow
@pytest.mark.skipif(not QEMU_EFI.exists(), reason="qemu-efi-aarch64 not installed")
def test_edk2_pxe_probe_over_virtio_net_pci() -> None:
    session = ConsoleSession(
        "aarch64",
        *("-M", "virt", "-cpu", "cortex-a72", "-m", "512", "-nographic", "-no-reboot"),
        *("-bios", str(QEMU_EFI), "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"),
    )
    try:
        # EDK2 waits for DHCP offers for about a minute before giving up (so does QEMU's)
        session.expect(">>Start PXE over IPv4.", timeout=600)
        session.expect(">>Start PXE over IPv6.", timeout=300)
    finally:
        session.close()
    lines = session.lines()
    at = lines.index(">>Start PXE over IPv4.")
    assert lines[at + 1 : at + 4] == [
        "  PXE-E16: No valid offer received.",
        'BdsDxe: failed to load Boot0001 "UEFI PXEv4 (MAC:525400123456)" from '
        "PciRoot(0x0)/Pci(0x1,0x0)/MAC(525400123456,0x1)/"
        "IPv4(0.0.0.0,0x0,DHCP,0.0.0.0,0.0.0.0,0.0.0.0): Not Found",
        "",
    ]
