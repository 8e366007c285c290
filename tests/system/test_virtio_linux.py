"""Debian's arm64 kernel drives our virtio-mmio devices: its own virtio_mmio, virtio_blk,
virtio_console and virtio-rng modules (built as modules in the cloud kernel) are loaded from a
busybox initramfs, which then reads and writes /dev/vda, prints on hvc0 and reads /dev/hwrng."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.system.conftest import run_system
from tests.system.debian import CACHE, arm64_kernel
from tests.system.initramfs import Entry, busybox_arm64, newc

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
    version = kernel.name.removeprefix("vmlinuz-")
    module_dir = CACHE / "k" / "lib" / "modules" / version / "kernel"
    directory, executable = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755
    entries = [
        Entry("bin", directory),
        Entry("bin/busybox", executable, busybox_arm64().read_bytes()),
        Entry("dev", directory),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("modules", directory),
    ]
    insmods = []
    for module in MODULES:
        source = module_dir / module
        if not source.exists():
            pytest.skip(f"{source} not in the kernel package")
        entries.append(Entry(f"modules/{source.name}", stat.S_IFREG | 0o644, source.read_bytes()))
        insmods.append(f"insmod /modules/{source.name}")
    entries.append(Entry("init", executable, INIT.format(insmods="\n".join(insmods)).encode()))
    path.write_bytes(newc(entries))


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
