"""Debian's arm64 kernel drives virtio-scsi over PCI with its own sd/sr drivers: a scsi-hd disk
is identified (INQUIRY strings, capacity), read and written (the test finds the guest's marker in
the image), and a scsi-cd is read; also virtio-scsi over virtio-mmio."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.conftest import run_system
from tests.system.debian import arm64_kernel
from tests.system.initramfs import arm64_modules, busybox_arm64, initramfs_with_modules

MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/virtio/virtio_mmio.ko",
    "drivers/scsi/scsi_common.ko",
    "drivers/scsi/scsi_mod.ko",
    "drivers/scsi/virtio_scsi.ko",
    "drivers/scsi/sd_mod.ko",
    "drivers/cdrom/cdrom.ko",
    "drivers/scsi/sr_mod.ko",
)

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{insmods}
sleep 1
for d in /sys/class/scsi_device/*; do
  vendor=$(cat $d/device/vendor | tr -s ' ')
  model=$(cat $d/device/model | tr -s ' ')
  echo "scsi $(basename $d): $vendor|$model|type $(cat $d/device/type)"
done
echo "sda: $(cat /sys/block/sda/size) sectors"
echo "sda sector 0: $(head -n 1 /dev/sda)"
echo "written over scsi" | dd of=/dev/sda bs=512 seek=1 conv=sync 2>/dev/null
sync
echo "sr0: $(head -c 16 /dev/sr0)"
echo "done"
poweroff -f
"""


def make_initramfs(path: Path, kernel: Path) -> None:
    initramfs_with_modules(path, INIT, arm64_modules(kernel, MODULES), busybox_arm64())


@pytest.mark.slow
@pytest.mark.parametrize("controller", ["virtio-scsi-pci", "virtio-scsi-device"])
def test_linux_reads_and_writes_scsi_hd_and_reads_scsi_cd(tmp_path: Path, controller: str) -> None:
    kernel = arm64_kernel()
    initrd = tmp_path / "initrd.cpio"
    make_initramfs(initrd, kernel)
    disk = tmp_path / "disk.img"
    image = bytearray(256 * 512)
    image[:22] = b"scsi sector zero says\n"
    disk.write_bytes(bytes(image))
    iso = tmp_path / "cd.iso"
    iso.write_bytes(b"CD-ROM CONTENTS!".ljust(2048 * 8, b"\0"))
    result = run_system(
        "aarch64",
        *("-M", "virt", "-m", "512", "-nographic", "-no-reboot"),
        *("-kernel", str(kernel), "-initrd", str(initrd)),
        *("-append", "console=ttyAMA0 panic=-1 quiet"),
        *("-drive", f"file={disk},format=raw,if=none,id=hd"),
        *("-drive", f"file={iso},format=raw,if=none,id=cd,readonly=on"),
        *("-device", controller),
        *("-device", "scsi-hd,drive=hd"),
        *("-device", "scsi-cd,drive=cd"),
        timeout=300,
    )
    lines = [line.rstrip("\r") for line in result.stdout.splitlines()]
    assert "scsi 0:0:0:0: QEMU |QEMU HARDDISK |type 0" in lines, result.stdout[-3000:]
    assert "scsi 0:0:1:0: QEMU |QEMU CD-ROM |type 5" in lines
    assert "sda: 256 sectors" in lines
    assert "sda sector 0: scsi sector zero says" in lines
    assert "sr0: CD-ROM CONTENTS!" in lines
    assert "done" in lines
    assert result.returncode == 0
    assert disk.read_bytes()[512:1024] == b"written over scsi\n".ljust(512, b"\0")
