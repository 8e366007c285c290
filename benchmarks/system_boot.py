"""Boot Debian's arm64 kernel under qemuser-system-aarch64 and Debian's qemu-system-aarch64.

    .venv/bin/python benchmarks/system_boot.py [--runs N]

Until the initramfs shell boots, the workload is: kernel start -> root-mount panic -> PSCI reboot
(`panic=-1 -no-reboot`), which exercises GIC, arch timer, PL011 and PSCI. Prints the median wall
time of each side and the ratio qemuser/QEMU (issue 5's bar: at most 5x). Needs the kernel that
tests/system fetch (cache/system/) and, for the QEMU side, the qemu-system-arm package.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.system.debian import arm64_kernel  # noqa: E402

ARGS = [
    "-M",
    "virt",
    "-m",
    "512",
    "-nographic",
    "-no-reboot",
    "-append",
    "console=ttyAMA0 panic=-1",
]
MARKER = b"VFS: Unable to mount root fs"


def boot(command: list[str]) -> float:
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - start
    if MARKER not in done.stdout:
        raise SystemExit(
            f"{command[0]}: boot did not reach the root mount (status {done.returncode})"
        )
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    kernel = str(arm64_kernel())
    ours = [str(ROOT / ".venv" / "bin" / "qemuser-system-aarch64"), *ARGS, "-kernel", kernel]
    qemu_bin = shutil.which("qemu-system-aarch64")
    theirs = [qemu_bin, *ARGS, "-cpu", "max", "-kernel", kernel] if qemu_bin else None
    ours_t, theirs_t = [], []
    for _ in range(opts.runs):
        ours_t.append(boot(ours))
        if theirs:
            theirs_t.append(boot(theirs))
    mine = statistics.median(ours_t)
    print(f"qemuser-system-aarch64  {mine:8.2f} s")
    if not theirs_t:
        print("qemu-system-aarch64     not installed (apt-get install qemu-system-arm)")
        return 0
    ref = statistics.median(theirs_t)
    print(f"qemu-system-aarch64     {ref:8.2f} s")
    print(f"ratio                   {mine / ref:8.2f}x (bar 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
