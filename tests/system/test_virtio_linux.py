"""Debian's arm64 kernel drives our virtio-mmio devices: its own virtio_mmio, virtio_blk,
virtio_console and virtio-rng modules (built as modules in the cloud kernel) are loaded from a
busybox initramfs, which then reads and writes /dev/vda, prints on hvc0 and reads /dev/hwrng."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.conftest import run_system
from tests.system.debian import arm64_kernel
from tests.system.initramfs import arm64_modules, busybox_arm64, initramfs_with_modules

# Load order follows the modules' depends= fields (virtio_ring <- virtio <- the rest).
MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_mmio.ko",
    "drivers/block/virtio_blk.ko",
    "drivers/char/virtio_console.ko",
    "drivers/char/hw_random/virtio-rng.ko",
)

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{insmods}
echo "vda: $(cat /sys/block/vda/size) sectors, ro $(cat /sys/block/vda/ro)"
echo "sector 0: $(head -n 1 /dev/vda)"
echo "written by linux" | dd of=/dev/vda bs=512 seek=1 conv=sync 2>/dev/null
sync
echo "hwrng: $(cat /sys/class/misc/hw_random/rng_current) $(head -c 32 /dev/hwrng | wc -c) bytes"
echo "hello on hvc0" > /dev/hvc0
echo "done"
poweroff -f
"""


def make_initramfs(path: Path, kernel: Path) -> None:
    """busybox, the kernel's own virtio modules and an /init that loads them and tests."""
    initramfs_with_modules(path, INIT, arm64_modules(kernel, MODULES), busybox_arm64())


@pytest.mark.slow
def test_linux_uses_virtio_blk_console_and_rng(tmp_path: Path) -> None:
    kernel = arm64_kernel()
    initrd = tmp_path / "initrd.cpio"
    make_initramfs(initrd, kernel)
    disk = tmp_path / "disk.img"
    image = bytearray(64 * 512)
    image[:23] = b"sector zero says hello\n"
    disk.write_bytes(bytes(image))
    result = run_system(
        "aarch64",
        *("-M", "virt", "-m", "512", "-nographic", "-no-reboot"),
        *("-kernel", str(kernel), "-initrd", str(initrd)),
        *("-append", "console=ttyAMA0 panic=-1 quiet"),
        *("-drive", f"file={disk},format=raw,if=none,id=d0"),
        *("-device", "virtio-blk-device,drive=d0"),
        *("-device", "virtio-rng-device"),
        *("-device", "virtio-serial-device", "-device", "virtconsole"),
        timeout=300,
    )
    lines = [line.rstrip("\r") for line in result.stdout.splitlines()]
    assert "vda: 64 sectors, ro 0" in lines, result.stdout[-3000:]
    assert "sector 0: sector zero says hello" in lines
    assert "hwrng: virtio_rng.0 32 bytes" in lines
    assert "hello on hvc0" in lines
    assert "done" in lines
    assert result.returncode == 0
    written = disk.read_bytes()[512:1024]
    assert written == b"written by linux\n".ljust(512, b"\0")
