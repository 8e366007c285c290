"""Debian's arm64 kernel finds our PCIe host bridge (pci-host-generic, built in) and drives
virtio over PCI with its own virtio_pci modules: a virtio-blk-pci disk is read and written, and
virtio-rng-pci feeds /dev/hwrng; lspci-style facts come from sysfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.conftest import run_system
from tests.system.debian import arm64_kernel
from tests.system.initramfs import arm64_modules, busybox_arm64, initramfs_with_modules

# Load order follows the modules' depends= fields.
MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
    "drivers/char/hw_random/virtio-rng.ko",
)

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{insmods}
for d in /sys/bus/pci/devices/*; do
  echo "pci $(basename $d) $(cat $d/vendor):$(cat $d/device) class $(cat $d/class)"
done
echo "vda: $(cat /sys/block/vda/size) sectors"
echo "sector 0: $(head -n 1 /dev/vda)"
echo "written over pci" | dd of=/dev/vda bs=512 seek=1 conv=sync 2>/dev/null
sync
echo "hwrng: $(head -c 32 /dev/hwrng | wc -c) bytes"
echo "done"
poweroff -f
"""


def make_initramfs(path: Path, kernel: Path) -> None:
    initramfs_with_modules(path, INIT, arm64_modules(kernel, MODULES), busybox_arm64())


@pytest.mark.slow
def test_linux_drives_virtio_blk_and_rng_over_pci(tmp_path: Path) -> None:
    kernel = arm64_kernel()
    initrd = tmp_path / "initrd.cpio"
    make_initramfs(initrd, kernel)
    disk = tmp_path / "disk.img"
    image = bytearray(128 * 512)
    image[:21] = b"pci sector zero says\n"
    disk.write_bytes(bytes(image))
    result = run_system(
        "aarch64",
        *("-M", "virt", "-m", "512", "-nographic", "-no-reboot", "-net", "none"),
        *("-kernel", str(kernel), "-initrd", str(initrd)),
        *("-append", "console=ttyAMA0 panic=-1 quiet"),
        # if=virtio is a virtio-blk-pci on the virt boards, plugged after every -device (QEMU's)
        *("-drive", f"file={disk},format=raw,if=virtio"),
        *("-device", "virtio-rng-pci"),
        timeout=300,
    )
    lines = [line.rstrip("\r") for line in result.stdout.splitlines()]
    # as under QEMU: the host bridge at 00.0, the -device, then the if=virtio disk
    assert "pci 0000:00:00.0 0x1b36:0x0008 class 0x060000" in lines, result.stdout[-3000:]
    assert "pci 0000:00:01.0 0x1af4:0x1044 class 0x00ff00" in lines
    assert "pci 0000:00:02.0 0x1af4:0x1042 class 0x018000" in lines
    assert "vda: 128 sectors" in lines
    assert "sector 0: pci sector zero says" in lines
    assert "hwrng: 32 bytes" in lines
    assert "done" in lines
    assert result.returncode == 0
    assert disk.read_bytes()[512:1024] == b"written over pci\n".ljust(512, b"\0")
