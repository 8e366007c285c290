"""Networking end to end: Debian's arm64 kernel with virtio-net (PCI and MMIO) on `-netdev user`
gets 10.0.2.15 from libslirp's DHCP, fetches a file from an HTTP server the test runs on the
host's 127.0.0.1 (10.0.2.2 from the guest) and prints its SHA-256, which must equal the host's;
then a `hostfwd` port reaches dropbear in the guest and the host's ssh runs `uname -m` there.
Only loopback addresses are used; every wait is bounded."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.real.debroot import ensure_root
from tests.system.conftest import BIN
from tests.system.debian import CACHE, arm64_kernel
from tests.system.initramfs import Entry, busybox_arm64, newc

DROPBEAR_PACKAGES = (
    "dropbear-bin",
    "libc6",
    "libcrypt1",
    "libtomcrypt1",
    "libtommath1",
    "zlib1g",
    "libgmp10",
)
BASE_MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
)
TRANSPORT_MODULES = {
    "virtio-net-pci": (
        "drivers/virtio/virtio_pci_modern_dev.ko",
        "drivers/virtio/virtio_pci_legacy_dev.ko",
        "drivers/virtio/virtio_pci.ko",
    ),
    "virtio-net-device": ("drivers/virtio/virtio_mmio.ko",),
}
UDHCPC_SCRIPT = """#!/bin/busybox sh
case "$1" in bound|renew)
  ip addr add "$ip/$mask" dev "$interface"
  ip route add default via "$router"
  echo "lease: $ip router $router dns $dns"
esac
"""
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
SSH_PART = """/usr/sbin/dropbear -R -E -p 22
sleep 1
netstat -ltn 2>&1 | grep ':22 ' && echo "sshd up"
n=0
while [ ! -e /tmp/poweroff ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done
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
        Entry("etc", directory),
        Entry("etc/passwd", regular, b"root:x:0:0:root:/root:/bin/sh\n"),
        Entry("etc/group", regular, b"root:x:0:\n"),
        Entry("etc/shells", regular, b"/bin/sh\n"),
        Entry("root", stat.S_IFDIR | 0o700),
        Entry("root/.ssh", stat.S_IFDIR | 0o700),
        Entry("root/.ssh/authorized_keys", stat.S_IFREG | 0o600, key.encode()),
    ]
    insmods = []
    for module in (
        BASE_MODULES[:2]
        + TRANSPORT_MODULES[model]
        + BASE_MODULES[2:]
        + ("drivers/net/virtio_net.ko",)
    ):
        source = module_dir / module
        if not source.exists():
            pytest.skip(f"{source} not in the kernel package")
        entries.append(Entry(f"modules/{source.name}", regular, source.read_bytes()))
        insmods.append(f"insmod /modules/{source.name}")
    if with_ssh:
        root = ensure_root(DROPBEAR_PACKAGES, "debian-arm64-dropbear-root")
        files = ("usr/sbin/dropbear", "lib/ld-linux-aarch64.so.1", *_libraries(root))
        dirs = sorted(
            {"/".join(Path(rel).parts[:i]) for rel in files for i in range(1, len(Path(rel).parts))}
        )
        # the kernel unpacks the archive in order: a directory before what it holds
        entries += [Entry(d, directory) for d in dirs if d not in ("etc", "root")]
        entries += [Entry(rel, executable, _read_in_root(root, rel)) for rel in files]
    init = INIT.format(
        insmods="\n".join(insmods), http_port=http_port, ssh_part=SSH_PART if with_ssh else ""
    )
    entries.append(Entry("init", executable, init.encode()))
    path.write_bytes(newc(entries))


def _read_in_root(root: Path, rel: str) -> bytes:
    """A file of the extracted root, following its symlinks inside the root (an absolute link
    target names a path in the root, not on the host)."""
    path = root / rel
    for _ in range(16):
        if not path.is_symlink():
            return path.read_bytes()
        target = os.readlink(path)
        path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
    raise OSError(f"symlink loop at {rel}")


def _libraries(root: Path) -> list[str]:
    found = []
    for directory in ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu"):
        for lib in sorted((root / directory).glob("*.so*")):
            found.append(str(lib.relative_to(root)))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Payload(http.server.BaseHTTPRequestHandler):
    data = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/payload" else 404)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server():
    payload = os.urandom(96 * 1024)
    handler = type("Handler", (Payload,), {"data": payload})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], payload
    server.shutdown()
    server.server_close()


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
    tmp_path: Path, model: str, http_server
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
def test_ssh_into_the_guest_through_hostfwd(tmp_path: Path, http_server) -> None:
    port, _ = http_server
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ssh_port = free_port()
    proc = boot(
        tmp_path, "virtio-net-pci", port, ssh_port, (tmp_path / "id_ed25519.pub").read_text()
    )
    command = [
        "ssh", "-i", str(key), "-p", str(ssh_port), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR", "root@127.0.0.1", "uname -m; touch /tmp/poweroff",
    ]  # fmt: skip
    result = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            if result.returncode == 0:
                break
            time.sleep(2)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result is not None and result.returncode == 0, (result and result.stderr, out[-2000:])
    assert result.stdout == "aarch64\n"
    assert proc.returncode == 0
