"""Debian's arm64 kernel drives our virtio-mmio devices: its own virtio_mmio, virtio_blk,
virtio_console and virtio-rng modules (built as modules in the cloud kernel) are loaded from a
busybox initramfs, which then reads and writes /dev/vda, prints on hvc0 and reads /dev/hwrng."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from tests.system.conftest import run_system
from tests.system.debian import CACHE, _download, arm64_kernel

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


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An initramfs archive (cpio "newc", see the kernel's Documentation/driver-api/
    early-userspace/buffer-format.rst): (path, mode, data) entries, then the trailer."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += bytes(-len(out) % 4) + data
        out += bytes(-len(out) % 4)
    return bytes(out)


def _busybox() -> Path:
    unpacked = CACHE / "busybox" / "bin" / "busybox"
    if not unpacked.exists():
        deb = _download("busybox-static:arm64")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(CACHE / "busybox")], check=True)
    return unpacked


def make_initramfs(path: Path, kernel: Path) -> None:
    version = kernel.name.removeprefix("vmlinuz-")
    module_dir = CACHE / "k" / "lib" / "modules" / version / "kernel"
    insmods = []
    entries: list[tuple[str, int, bytes]] = [
        ("bin", stat.S_IFDIR | 0o755, b""),
        ("modules", stat.S_IFDIR | 0o755, b""),
        ("bin/busybox", stat.S_IFREG | 0o755, _busybox().read_bytes()),
    ]
    for module in MODULES:
        source = module_dir / module
        if not source.exists():
            pytest.skip(f"{source} not in the kernel package")
        entries.append((f"modules/{source.name}", stat.S_IFREG | 0o644, source.read_bytes()))
        insmods.append(f"insmod /modules/{source.name}")
    init = INIT.format(insmods="\n".join(insmods)).encode()
    entries.append(("init", stat.S_IFREG | 0o755, init))
    path.write_bytes(_cpio_newc(entries))


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
        timeout=600,
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
