"""Boot Debian's arm64 kernel to a busybox initramfs under qemuser-system-aarch64 and Debian's
qemu-system-aarch64, alternately, and print the medians and their ratio.

    .venv/bin/python benchmarks/system_boot.py [--runs N]

The workload: kernel start with its full boot log on the PL011, initramfs unpacked, /init
(busybox) runs `poweroff -f`, PSCI SYSTEM_OFF ends the emulator. Both sides get the same command
line (`-cpu cortex-a72`: with `max` both spend much of the boot in pointer-authentication
arithmetic). Issue 5's bar: qemuser at most 5x QEMU's wall time. The kernel and busybox come
from Debian (apt-get download, cached in cache/system/); qemu-system-arm is installed with
apt-get when missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.system.debian import arm64_kernel  # noqa: E402
from tests.system.initramfs import busybox_initramfs  # noqa: E402

INIT = "#!/bin/busybox sh\n/bin/busybox poweroff -f\n"
ARGS = ["-M", "virt", "-cpu", "cortex-a72", "-m", "512", "-nographic"]
APPEND = ["-append", "console=ttyAMA0"]
MARKER = b"reboot: Power down"


def qemu_system_aarch64() -> str | None:
    found = shutil.which("qemu-system-aarch64")
    if found is None and os.geteuid() == 0:
        print("installing qemu-system-arm (apt-get)", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", "qemu-system-arm"], check=False)
        found = shutil.which("qemu-system-aarch64")
    return found


def boot(command: list[str]) -> float:
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - start
    if MARKER not in done.stdout or done.returncode != 0:
        tail = done.stdout[-500:].decode(errors="replace")
        raise SystemExit(f"{command[0]}: did not power off (status {done.returncode}):\n{tail}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    images = [
        "-kernel",
        str(arm64_kernel()),
        "-initrd",
        str(busybox_initramfs("bench-poweroff", INIT)),
    ]
    ours = [str(ROOT / ".venv" / "bin" / "qemuser-system-aarch64"), *ARGS, *images, *APPEND]
    qemu_bin = qemu_system_aarch64()
    # QEMU's virt adds a PCI NIC by default (and wants its option ROM from ipxe-qemu); qemuser's
    # board has none, so QEMU gets none either.
    theirs = [qemu_bin, *ARGS, "-nic", "none", *images, *APPEND] if qemu_bin else None
    ours_t: list[float] = []
    theirs_t: list[float] = []
    for _ in range(opts.runs):  # alternate, so that load changes hit both sides alike
        ours_t.append(boot(ours))
        if theirs:
            theirs_t.append(boot(theirs))
    mine = statistics.median(ours_t)
    print(f"qemuser-system-aarch64  {mine:8.2f} s  (runs: {', '.join(f'{t:.2f}' for t in ours_t)})")
    if not theirs_t:
        print("qemu-system-aarch64     not available (apt-get install qemu-system-arm)")
        return 0
    ref = statistics.median(theirs_t)
    print(
        f"qemu-system-aarch64     {ref:8.2f} s  (runs: {', '.join(f'{t:.2f}' for t in theirs_t)})"
    )
    print(f"ratio                   {mine / ref:8.2f}x (bar 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
