"""A guest reachable over SSH, shared by the tests that log in to one: dropbear and its libraries
from Debian's arm64 packages as initramfs entries, root's account and authorized key, the
kernel modules of virtio-net over PCI or MMIO, and the host's `ssh` retried until the guest's
server answers (every wait bounded)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

from tests.real.debroot import ensure_root
from tests.system.initramfs import Entry

DROPBEAR_PACKAGES = (
    "dropbear-bin",
    "libc6",
    "libcrypt1",
    "libtomcrypt1",
    "libtommath1",
    "zlib1g",
    "libgmp10",
)
# Debian's cloud kernel has virtio and virtio-net as modules, in this load order (each needs the
# ones before it); the transport modules go between the core and the NIC's.
VIRTIO_NET_BASE = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
)
VIRTIO_NET_TRANSPORT = {
    "virtio-net-pci": (
        "drivers/virtio/virtio_pci_modern_dev.ko",
        "drivers/virtio/virtio_pci_legacy_dev.ko",
        "drivers/virtio/virtio_pci.ko",
    ),
    "virtio-net-device": ("drivers/virtio/virtio_mmio.ko",),
}
# /init starts the server on port 22 and waits (bounded) until the test's command asks it to
# power off by creating /tmp/poweroff.
DROPBEAR_START = """/usr/sbin/dropbear -R -E -p 22
sleep 1
netstat -ltn 2>&1 | grep ':22 ' && echo "sshd up"
n=0
while [ ! -e /tmp/poweroff ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done
"""

_DIR, _EXEC, _REG = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755, stat.S_IFREG | 0o644


def virtio_net_modules(model: str) -> tuple[str, ...]:
    """The module paths (under lib/modules/<version>/kernel) for a virtio-net `model`."""
    return (
        VIRTIO_NET_BASE[:2]
        + VIRTIO_NET_TRANSPORT[model]
        + VIRTIO_NET_BASE[2:]
        + ("drivers/net/virtio_net.ko",)
    )


def account_entries(key: str) -> list[Entry]:
    """/etc's passwd, group and shells for root, and root's authorized `key`."""
    return [
        Entry("etc", _DIR),
        Entry("etc/passwd", _REG, b"root:x:0:0:root:/root:/bin/sh\n"),
        Entry("etc/group", _REG, b"root:x:0:\n"),
        Entry("etc/shells", _REG, b"/bin/sh\n"),
        Entry("root", stat.S_IFDIR | 0o700),
        Entry("root/.ssh", stat.S_IFDIR | 0o700),
        Entry("root/.ssh/authorized_keys", stat.S_IFREG | 0o600, key.encode()),
    ]


def dropbear_entries(skip_dirs: tuple[str, ...] = ("etc", "root")) -> list[Entry]:
    """/usr/sbin/dropbear, the dynamic loader and every library of the extracted packages, with
    their directories first (the kernel unpacks the archive in order); `skip_dirs` are
    directories the archive already has."""
    root = ensure_root(DROPBEAR_PACKAGES, "debian-arm64-dropbear-root")
    files = ("usr/sbin/dropbear", "lib/ld-linux-aarch64.so.1", *_libraries(root))
    dirs = sorted(
        {"/".join(Path(rel).parts[:i]) for rel in files for i in range(1, len(Path(rel).parts))}
    )
    entries = [Entry(d, _DIR) for d in dirs if d not in skip_dirs]
    return entries + [Entry(rel, _EXEC, _read_in_root(root, rel)) for rel in files]


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


def new_key(directory: Path) -> tuple[Path, str]:
    """A fresh ed25519 key pair without passphrase: (private key file, public key line)."""
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, key.with_name("id_ed25519.pub").read_text()


def ssh_until_up(
    key: Path, port: int, remote: str, guest: subprocess.Popen, timeout: float = 300
) -> subprocess.CompletedProcess[str] | None:
    """Runs `remote` as root@127.0.0.1:`port` with the host's ssh, again every 2 s until it
    succeeds, the guest exits or `timeout` passes; the last attempt's result (None if none)."""
    command = [
        "ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=60", "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR", "root@127.0.0.1", remote,
    ]  # fmt: skip
    result = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and guest.poll() is None:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired as slow:
            # libslirp accepts the TCP connection on the host at once; a guest slowed down by
            # a loaded host can take long to answer it (ConnectTimeout also bounds the banner
            # exchange, hence its 60 s: a shorter one gave up on a server about to answer).
            result = subprocess.CompletedProcess(command, 255, "", f"ssh: {slow}")
            continue
        if result.returncode == 0:
            break
        time.sleep(2)
    return result
