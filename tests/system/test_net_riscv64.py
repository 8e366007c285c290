"""Networking on riscv64: Debian trixie's kernel (virtio_net and its failover deps are xz
modules of the package, decompressed into the initramfs; virtio-pci is built in) with
`-netdev user` and virtio-net on PCI and on virtio-mmio gets 10.0.2.15 from libslirp's DHCP,
fetches a file from an HTTP server on the host's 127.0.0.1 (10.0.2.2 from the guest) with
busybox wget and prints its SHA-256, which must equal the host's; and busybox nc reaches a
server of the test through `guestfwd=tcp:10.0.2.100:1234-tcp:127.0.0.1:PORT` (a tcp chardev the
emulator connects at start-up). Every wait is bounded."""

from __future__ import annotations

import hashlib
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.trixie import FetchError, ensure_kernel, ensure_userland
from tests.system.conftest import run_system
from tests.system.initramfs import Entry, initramfs_with_modules, modules_in
from tests.system.netguest import UDHCPC_SCRIPT, http_server  # noqa: F401 (a fixture)

NET_MODULES = (
    "net/core/failover.ko.xz",
    "drivers/net/net_failover.ko.xz",
    "drivers/net/virtio_net.ko.xz",
)
# virtio-pci is built into trixie's riscv64 kernel; virtio-mmio is a module
TRANSPORT_MODULES = {
    "virtio-net-pci": (),
    "virtio-net-device": ("drivers/virtio/virtio_mmio.ko.xz",),
}

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{insmods}
ip link set lo up
ip link set eth0 up
echo "machine: $(uname -m)"
echo "mac: $(cat /sys/class/net/eth0/address)"
udhcpc -i eth0 -s /udhcpc.sh -q -n -t 10 -T 1
wget -q -O /tmp/fetched http://10.0.2.2:PORT/payload
echo "sha256: $(sha256sum /tmp/fetched)"
# the chardev never closes the guest's connection (QEMU's does not either): wait for the reply
echo "hello from $(uname -m)" | nc 10.0.2.100 1234 > /tmp/reply &
n=0
while ! grep -q "host got" /tmp/reply && [ $n -lt 200 ]; do sleep 0.1; n=$((n+1)); done
kill $!
cat /tmp/reply
echo "done"
poweroff -f
"""


def make_initramfs(path: Path, model: str, http_port: int) -> Path:
    """The initramfs; returns the kernel to boot with it."""
    try:
        kernel, kernel_root = ensure_kernel()
        userland = ensure_userland()
    except FetchError as exc:
        pytest.skip(f"Debian trixie riscv64 packages not reachable: {exc}")
    module_dir = next((kernel_root / "usr" / "lib" / "modules").iterdir()) / "kernel"
    modules = modules_in(module_dir, TRANSPORT_MODULES[model] + NET_MODULES)
    script = Entry("udhcpc.sh", stat.S_IFREG | 0o755, UDHCPC_SCRIPT.encode())
    init = INIT.replace("PORT", str(http_port))
    initramfs_with_modules(path, init, modules, userland / "usr/bin/busybox", (script,))
    return kernel


@pytest.fixture
def guestfwd_server() -> Iterator[int]:
    """A server on the host's loopback that answers one line with "host got: LINE"."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(400)

    def serve() -> None:
        try:
            conn, _ = listener.accept()  # the emulator's chardev, at start-up
        except OSError:
            return
        with conn, conn.makefile("rb") as stream:
            line = stream.readline()
            conn.sendall(b"host got: " + line)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    thread.join(5)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["virtio-net-pci", "virtio-net-device"])
def test_riscv64_dhcp_and_http_fetch_through_user_networking(
    tmp_path: Path,
    model: str,
    http_server: tuple[int, bytes],  # noqa: F811
    guestfwd_server: int,
) -> None:
    port, payload = http_server
    initrd = tmp_path / "initrd.cpio"
    kernel = make_initramfs(initrd, model, port)
    result = run_system(
        "riscv64",
        *("-M", "virt", "-m", "512", "-nographic", "-no-reboot"),
        *("-kernel", str(kernel), "-initrd", str(initrd)),
        *("-append", "console=ttyS0 panic=-1 quiet"),
        *("-netdev", f"user,id=n0,guestfwd=tcp:10.0.2.100:1234-tcp:127.0.0.1:{guestfwd_server}"),
        *("-device", f"{model},netdev=n0"),
        timeout=400,
    )
    lines = [line.rstrip("\r") for line in result.stdout.splitlines()]
    assert "machine: riscv64" in lines, result.stdout[-3000:] + result.stderr
    assert "mac: 52:54:00:12:34:56" in lines
    assert "lease: 10.0.2.15 router 10.0.2.2 dns 10.0.2.3" in lines
    assert f"sha256: {hashlib.sha256(payload).hexdigest()}  /tmp/fetched" in lines
    assert "host got: hello from riscv64" in lines
    assert "done" in lines
    assert result.returncode == 0, result.stderr
