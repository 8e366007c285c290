"""Networking end to end: Debian's arm64 kernel with virtio-net (PCI and MMIO) on `-netdev user`
gets 10.0.2.15 from libslirp's DHCP, fetches a file from an HTTP server the test runs on the
host's 127.0.0.1 (10.0.2.2 from the guest) and prints its SHA-256, which must equal the host's;
then a `hostfwd` port reaches dropbear in the guest and the host's ssh runs `uname -m` there.
Only loopback addresses are used; every wait is bounded."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest

from tests.system.conftest import BIN
from tests.system.debian import CACHE, arm64_kernel
from tests.system.initramfs import Entry, busybox_arm64, newc
from tests.system.netguest import UDHCPC_SCRIPT, free_port, http_server  # noqa: F401 (a fixture)
from tests.system.sshguest import (
    DROPBEAR_START,
    account_entries,
    dropbear_entries,
    new_key,
    ssh_until_up,
    virtio_net_modules,
)

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /var/run /etc/dropbear
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
{insmods}
ip link set lo up
ip link set eth0 up
echo "mac: $(cat /sys/class/net/eth0/address)"
udhcpc -i eth0 -s /udhcpc.sh -q -n -t 10 -T 1
wget -q -O /tmp/fetched http://10.0.2.2:{http_port}/payload
echo "sha256: $(sha256sum /tmp/fetched)"
{ssh_part}
echo "done"
poweroff -f
"""


def make_initramfs(
    path: Path, kernel: Path, model: str, http_port: int, with_ssh: bool, key: str
) -> None:
    version = kernel.name.removeprefix("vmlinuz-")
    module_dir = CACHE / "k" / "lib" / "modules" / version / "kernel"
    directory, executable, regular = (
        stat.S_IFDIR | 0o755,
        stat.S_IFREG | 0o755,
        stat.S_IFREG | 0o644,
    )
    entries = [
        Entry("bin", directory),
        Entry("bin/busybox", executable, busybox_arm64().read_bytes()),
        Entry("dev", directory),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("modules", directory),
        Entry("udhcpc.sh", executable, UDHCPC_SCRIPT.encode()),
        *account_entries(key),
    ]
    insmods = []
    for module in virtio_net_modules(model):
        source = module_dir / module
        if not source.exists():
            pytest.skip(f"{source} not in the kernel package")
        entries.append(Entry(f"modules/{source.name}", regular, source.read_bytes()))
        insmods.append(f"insmod /modules/{source.name}")
    if with_ssh:
        entries += dropbear_entries()
    init = INIT.format(
        insmods="\n".join(insmods), http_port=http_port, ssh_part=DROPBEAR_START if with_ssh else ""
    )
    entries.append(Entry("init", executable, init.encode()))
    path.write_bytes(newc(entries))


def boot(
    tmp_path: Path, model: str, http_port: int, ssh_port: int | None, key: str = ""
) -> subprocess.Popen:
    kernel = arm64_kernel()
    initrd = tmp_path / "initrd.cpio"
    make_initramfs(initrd, kernel, model, http_port, ssh_port is not None, key)
    netdev = "user,id=n0"
    if ssh_port is not None:
        netdev += f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    return subprocess.Popen(
        [str(BIN / "qemuser-system-aarch64"), "-M", "virt", "-m", "512", "-nographic", "-no-reboot",
         "-kernel", str(kernel), "-initrd", str(initrd),
         "-append", "console=ttyAMA0 panic=-1 quiet",
         "-netdev", netdev, "-device", f"{model},netdev=n0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("model", ["virtio-net-pci", "virtio-net-device"])
def test_dhcp_and_http_fetch_through_user_networking(
    tmp_path: Path,
    model: str,
    http_server,  # noqa: F811
) -> None:
    port, payload = http_server
    proc = boot(tmp_path, model, port, None)
    out, err = proc.communicate(timeout=400)
    lines = [line.rstrip("\r") for line in out.splitlines()]
    assert "mac: 52:54:00:12:34:56" in lines, out[-3000:] + err
    assert "lease: 10.0.2.15 router 10.0.2.2 dns 10.0.2.3" in lines
    assert f"sha256: {hashlib.sha256(payload).hexdigest()}  /tmp/fetched" in lines
    assert "done" in lines
    assert proc.returncode == 0, err


@pytest.mark.slow
def test_ssh_into_the_guest_through_hostfwd(tmp_path: Path, http_server) -> None:  # noqa: F811
    port, _ = http_server
    key, public = new_key(tmp_path)
    ssh_port = free_port()
    proc = boot(tmp_path, "virtio-net-pci", port, ssh_port, public)
    try:
        result = ssh_until_up(key, ssh_port, "uname -m; touch /tmp/poweroff", proc)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result is not None and result.returncode == 0, (result and result.stderr, out[-2000:])
    assert result.stdout == "aarch64\n"
    assert proc.returncode == 0
