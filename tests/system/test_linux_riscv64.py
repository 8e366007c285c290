"""Debian trixie's riscv64 kernel (riscv64 is a release architecture there; fetched with an apt
configuration of its own, see tests/real/trixie.py) boots on `-M virt` with the built-in SBI and
a busybox initramfs, with one hart and with four: the shell runs, Linux counts the harts, the
PCI host bridge is found, a virtio-blk disk (its driver an xz-compressed module of the kernel
package, decompressed into the initramfs) is read and written, and `poweroff -f` ends the
emulator with status 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real.trixie import FetchError, ensure_kernel, ensure_userland
from tests.system.conftest import run_system
from tests.system.initramfs import initramfs_with_modules, modules_in

MODULES = ("drivers/virtio/virtio_mmio.ko.xz", "drivers/block/virtio_blk.ko.xz")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{insmods}
echo "machine: $(uname -m)"
echo "harts: $(grep -c '^processor' /proc/cpuinfo)"
host=/sys/bus/pci/devices/0000:00:00.0
echo "pci host: $(cat $host/vendor):$(cat $host/device)"
echo "vda: $(cat /sys/block/vda/size) sectors"
echo "sector 0: $(head -n 1 /dev/vda)"
echo "written by riscv64 linux" | dd of=/dev/vda bs=512 seek=1 conv=sync 2>/dev/null
sync
echo "done"
poweroff -f
"""


def make_initramfs(path: Path) -> None:
    try:
        _kernel, kernel_root = ensure_kernel()
        userland = ensure_userland()
    except FetchError as exc:
        pytest.skip(f"Debian trixie riscv64 packages not reachable: {exc}")
    module_dir = next((kernel_root / "usr" / "lib" / "modules").iterdir()) / "kernel"
    busybox = userland / "usr" / "bin" / "busybox"
    initramfs_with_modules(path, INIT, modules_in(module_dir, MODULES), busybox)


@pytest.mark.slow
@pytest.mark.parametrize("harts", [1, 4])
def test_trixie_riscv64_kernel_boots_to_a_shell_and_uses_virtio_blk(
    tmp_path: Path, harts: int
) -> None:
    initrd = tmp_path / "initrd.cpio"
    make_initramfs(initrd)
    kernel, _ = ensure_kernel()
    disk = tmp_path / "disk.img"
    image = bytearray(64 * 512)
    image[:26] = b"riscv64 sector zero says\n\0"
    disk.write_bytes(bytes(image))
    result = run_system(
        "riscv64",
        *("-M", "virt", "-m", "512", "-nographic", "-no-reboot", "-smp", str(harts)),
        *("-kernel", str(kernel), "-initrd", str(initrd)),
        *("-append", "console=ttyS0 panic=-1 quiet"),
        *("-drive", f"file={disk},format=raw,if=none,id=d0"),
        *("-device", "virtio-blk-device,drive=d0"),
        timeout=600,
    )
    lines = [line.rstrip("\r") for line in result.stdout.splitlines()]
    assert "machine: riscv64" in lines, result.stdout[-3000:] + result.stderr
    assert f"harts: {harts}" in lines
    assert "pci host: 0x1b36:0x0008" in lines
    assert "vda: 64 sectors" in lines
    assert "sector 0: riscv64 sector zero says" in lines
    assert "done" in lines
    assert result.returncode == 0
    assert disk.read_bytes()[512:1024] == b"written by riscv64 linux\n".ljust(512, b"\0")
