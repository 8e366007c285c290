"""TCP throughput from the host into a guest through `-netdev user,hostfwd=`: qemuser-system-
aarch64 against Debian's qemu-system-aarch64, on the same machine in the same run.

    .venv/bin/python benchmarks/net_throughput.py [--pairs N] [--mib M]

Both sides boot the same guest once: Debian bookworm's arm64 kernel (-cpu cortex-a72 on both
sides) with virtio-net-pci on user networking (libslirp on both sides) and a busybox initramfs
whose /init takes a DHCP lease, then loops on `nc -l -p 5000 | wc -c`, printing the byte count
of each connection on the console. The host connects to the forwarded loopback port, sends M MiB
of random bytes and closes; a transfer ends when the guest prints the count, which must equal
what was sent. Transfers alternate qemuser / QEMU (--pairs pairs, at least 5) while both guests
stay up (idle between transfers), so that this machine's speed swings hit both alike; the row
gives each side's median MB/s, the ratio of the medians (qemuser/QEMU: below 1 is slower) and the
ratio of the best transfers (max-to-max), as benchmarks/run.py prints its rows.

Exit status: 1 if a transfer failed (a guest that did not come up, a wrong count); else 0.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import stat
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.system.debian import CACHE, arm64_kernel  # noqa: E402
from tests.system.initramfs import Entry, busybox_arm64, newc  # noqa: E402
from tests.system.netguest import UDHCPC_SCRIPT, free_port  # noqa: E402
from tests.system.sshguest import virtio_net_modules  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
GUEST_PORT = 5000
BOOT_TIMEOUT_S = 600
TRANSFER_TIMEOUT_S = 600
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{insmods}
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /udhcpc.sh -q -n -t 10 -T 1
while true; do
  echo "bench: listening"
  echo "bench: received $(nc -l -p 5000 | wc -c)"
done
"""


def initramfs() -> Path:
    """cache/system/bench-net-aarch64.cpio: busybox, the modules, udhcpc's script, /init."""
    kernel = arm64_kernel()
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
        Entry("udhcpc.sh", executable, UDHCPC_SCRIPT.encode()),
        Entry("modules", directory),
    ]
    insmods = []
    for module in virtio_net_modules("virtio-net-pci"):
        source = module_dir / module
        entries.append(Entry(f"modules/{source.name}", regular, source.read_bytes()))
        insmods.append(f"insmod /modules/{source.name}")
    init = INIT.replace("{insmods}", "\n".join(insmods))
    entries.append(Entry("init", executable, init.encode()))
    path = CACHE / "bench-net-aarch64.cpio"
    path.write_bytes(newc(entries))
    return path


@dataclass
class Guest:
    """One running emulator and the lines of its console."""

    name: str
    command: list[str]
    host_port: int
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    mbps: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\r\n"))
        self.lines.put("")  # the emulator ended

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.name}: no '{prefix}' in {timeout:.0f} s") from None
            if line.startswith(prefix):
                return line
            if line == "" and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: the emulator ended ({self.proc.returncode})")

    def transfer(self, payload: bytes) -> float:
        """Send `payload` into the guest; MB/s from the connection to the guest's count."""
        self.wait_for("bench: listening", TRANSFER_TIMEOUT_S)
        time.sleep(0.5)  # nc starts listening just after the line (not timed)
        for _attempt in range(20):
            start = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", self.host_port), timeout=180) as conn:
                    conn.sendall(payload)
                break
            except (ConnectionResetError, BrokenPipeError):
                time.sleep(0.5)  # libslirp accepted, the guest's nc was not listening yet
            except TimeoutError:
                raise RuntimeError(f"{self.name}: the transfer made no progress in 180 s") from None
        else:
            raise RuntimeError(f"{self.name}: the guest never accepted a connection")
        line = self.wait_for("bench: received", TRANSFER_TIMEOUT_S)
        elapsed = time.perf_counter() - start
        if line != f"bench: received {len(payload)}":
            raise RuntimeError(f"{self.name}: sent {len(payload)} bytes, the guest said {line!r}")
        return len(payload) / elapsed / 1e6

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def guests() -> list[Guest]:
    common = [
        "-M", "virt", "-cpu", "cortex-a72", "-m", "512", "-nographic", "-no-reboot",
        "-kernel", str(arm64_kernel()), "-initrd", str(initramfs()),
        "-append", "console=ttyAMA0 panic=-1 quiet",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    found = []
    for name, program in (
        ("qemuser", str(VENV_BIN / "qemuser-system-aarch64")),
        ("qemu", "qemu-system-aarch64"),
    ):
        port = free_port()
        netdev = f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{GUEST_PORT}"
        found.append(Guest(name, [program, *common, "-netdev", netdev], port))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="qemuser/QEMU pairs (at least 5)")
    parser.add_argument("--mib", type=int, default=32, help="MiB sent in each transfer")
    args = parser.parse_args()
    pairs = max(5, args.pairs)
    payload = os.urandom(args.mib << 20)
    sides = guests()
    try:
        for guest in sides:
            guest.start()
        for guest in sides:
            guest.wait_for("lease: 10.0.2.15", BOOT_TIMEOUT_S)
        for _ in range(pairs):
            for guest in sides:
                guest.mbps.append(guest.transfer(payload))
    except RuntimeError as exc:
        print(f"| net-throughput | FAILED: {exc} |", flush=True)
        return 1
    finally:
        for guest in sides:
            guest.stop()
    ours, theirs = sides[0].mbps, sides[1].mbps
    print(f"host -> guest TCP through hostfwd, {args.mib} MiB a transfer, {pairs} pairs")
    print("| workload | qemuser MB/s (median) | qemu MB/s (median) | ratio of medians "
          "| ratio of best | qemuser runs | qemu runs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    row = (
        "net-throughput-aarch64",
        f"{statistics.median(ours):.1f}",
        f"{statistics.median(theirs):.1f}",
        f"{statistics.median(ours) / statistics.median(theirs):.2f}",
        f"{max(ours) / max(theirs):.2f}",
        " ".join(f"{v:.1f}" for v in ours),
        " ".join(f"{v:.1f}" for v in theirs),
    )
    print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
