"""Linux boots side by side: qemuser-system-{aarch64,riscv64} against Debian's
qemu-system-{aarch64,riscv64}, with -smp 1 and -smp 4, on the same machine in the same run.

    .venv/bin/python benchmarks/system_boot.py [--pairs N] [--only aarch64-smp1,riscv64-smp4,...]

The workload of each row: the kernel starts with its full boot log on the serial console, the
initramfs is unpacked, /init (busybox) mounts /proc, prints how many CPUs the kernel brought up,
and runs `poweroff -f`; the emulator ends on the guest's power-off (PSCI SYSTEM_OFF on aarch64,
SBI system reset / the syscon poweroff on riscv64) with status 0. A side that does not print the
marker with the right CPU count, or does not exit 0, fails the row.

- aarch64: Debian bookworm's linux-image-cloud-arm64 and busybox-static:arm64 (cached in
  cache/system/ by tests/system/debian.py), `-cpu cortex-a72` on both sides (with `max` both
  spend much of the boot in pointer-authentication arithmetic).
- riscv64: Debian trixie's linux-image-riscv64 and its busybox (tests/real/trixie.py). QEMU runs
  its own OpenSBI (fw_dynamic, from qemu-system-data) in emulated M mode; qemuser runs its
  built-in SBI (system/arch/riscv64.py) in Python: the firmware differs, the kernel does not.

Runs alternate qemuser / QEMU (--pairs pairs, at least 5), so that this machine's speed swings
hit both alike; each row gives the median wall time of both sides, the ratio of the medians, the
ratio of the fastest runs (min-to-min), issue 13's bar (1.5x, given for the arm64 boot and held
to on every row), and the peak RSS of each side (GNU time) with its ratio (bar: 2x): the columns
of benchmarks/run.py. qemu-system-arm / qemu-system-misc and GNU time are installed with
apt-get when missing (as root).

Exit status: 1 if a row failed; 0 otherwise (the ratios are reported, not enforced).
"""

from __future__ import annotations

import argparse
import compileall
import os
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import run as run_benchmarks  # noqa: E402  (benchmarks/run.py, beside this script)

from tests.real.trixie import ensure_kernel, ensure_userland  # noqa: E402
from tests.system.debian import CACHE, arm64_kernel  # noqa: E402
from tests.system.initramfs import Entry, busybox_arm64, newc  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
GNU_TIME = "/usr/bin/time"  # Debian package "time"
BAR = 1.5  # issue 13: "system: Debian arm64 kernel + initramfs to poweroff"
RSS_BAR = 2.0
TIMEOUT_S = 600
MARKER = "qemuser-bench: init reached with {} cpus"
INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "qemuser-bench: init reached with $(/bin/busybox grep -c ^processor /proc/cpuinfo) cpus"
/bin/busybox poweroff -f
"""
# Debian packages of the reference emulators and of GNU time, by the command they provide.
DEBIAN_TOOLS = {
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-system-riscv64": "qemu-system-misc",
    GNU_TIME: "time",
}
ARCHES = ("aarch64", "riscv64")
SMPS = (1, 4)
ROWS = tuple(f"{arch}-smp{smp}" for arch in ARCHES for smp in SMPS)


@dataclass(frozen=True)
class Boot:
    name: str
    arch: str
    cpus: int
    ours: tuple[str, ...]
    theirs: tuple[str, ...]


@dataclass
class Side:
    times: list[float] = field(default_factory=list)
    peak_rss_kib: int = 0


def initramfs(arch: str) -> Path:
    """cache/system/bench-boot-<arch>.cpio.gz: busybox of the architecture and the /init above."""
    busybox = busybox_arm64() if arch == "aarch64" else ensure_userland() / "usr/bin/busybox"
    directory, executable = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755
    entries = [
        Entry("bin", directory),
        Entry("bin/busybox", executable, busybox.read_bytes()),
        Entry("dev", directory),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("proc", directory),
        Entry("init", executable, INIT.encode()),
    ]
    path = CACHE / f"bench-boot-{arch}.cpio"
    data = newc(entries)
    if not path.exists() or path.read_bytes() != data:
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.rename(path)
    return path


def boots(selected: set[str]) -> list[Boot]:
    found = []
    for arch in ARCHES:
        if not any(name.startswith(arch) for name in selected):
            continue
        if arch == "aarch64":
            kernel = arm64_kernel()
            board = ("-M", "virt", "-cpu", "cortex-a72")
            append = "console=ttyAMA0 panic=-1"
        else:
            kernel = ensure_kernel()[0]
            board = ("-M", "virt")
            append = "console=ttyS0 panic=-1"
        common = (
            *board,
            *("-m", "512", "-nographic", "-no-reboot", "-nic", "none"),
            *("-kernel", str(kernel), "-initrd", str(initramfs(arch)), "-append", append),
        )
        for cpus in SMPS:
            name = f"{arch}-smp{cpus}"
            if name in selected:
                smp = ("-smp", str(cpus))
                ours = (str(VENV_BIN / f"qemuser-system-{arch}"), *common, *smp)
                found.append(Boot(name, arch, cpus, ours, (f"qemu-system-{arch}", *common, *smp)))
    return found


def run_once(cmd: tuple[str, ...]) -> tuple[float, int, str, int]:
    """Wall time, peak RSS (KiB, from GNU time: it forks from a small process, so the figure
    is the emulator's own), console output and exit status of one boot."""
    with tempfile.NamedTemporaryFile() as rss, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [GNU_TIME, "-f", "%M", "-o", rss.name, *cmd],
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return TIMEOUT_S, 0, f"timed out after {TIMEOUT_S} s", -1
        elapsed = time.perf_counter() - start
        err.seek(0)
        errors = err.read().decode(errors="replace")
        peak = Path(rss.name).read_text().split()
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        out += errors[-1000:]
    return elapsed, int(peak[-1]) if peak else 0, out, proc.returncode


def measure(boot: Boot, pairs: int) -> dict[str, Side] | str:
    sides = {"qemuser": Side(), "qemu": Side()}
    marker = MARKER.format(boot.cpus)
    for _ in range(pairs):
        for side, cmd in (("qemuser", boot.ours), ("qemu", boot.theirs)):
            elapsed, rss, out, status = run_once(cmd)
            if status != 0 or marker not in out:
                tail = " | ".join(out.strip().splitlines()[-3:])[-300:]
                return f"{side}: status {status}, no '{marker}': {tail}"
            sides[side].times.append(elapsed)
            sides[side].peak_rss_kib = max(sides[side].peak_rss_kib, rss)
    return sides


def report(boot: Boot, result: dict[str, Side] | str) -> bool:
    """Prints the row of one boot; True when it failed."""
    if isinstance(result, str):
        print(f"| {boot.name} | FAILED: {result} |", flush=True)
        return True
    ours, theirs = result["qemuser"], result["qemu"]
    ratio = statistics.median(ours.times) / statistics.median(theirs.times)
    rss_ratio = ours.peak_rss_kib / max(theirs.peak_rss_kib, 1)
    row = (
        boot.name,
        f"{statistics.median(ours.times):.3f}",
        f"{statistics.median(theirs.times):.3f}",
        f"{ratio:.2f}",
        f"{min(ours.times) / min(theirs.times):.2f}",
        f"{BAR:g}",
        "OVER" if ratio > BAR or rss_ratio > RSS_BAR else "ok",
        f"{ours.peak_rss_kib / 1024:.0f} MiB",
        f"{theirs.peak_rss_kib / 1024:.0f} MiB",
        f"{rss_ratio:.2f}",
    )
    print("| " + " | ".join(row) + " |", flush=True)
    return False


def install_missing_tools() -> None:
    run_benchmarks.install_missing_tools(DEBIAN_TOOLS)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} CPUs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs (at least 5)")
    parser.add_argument("--only", help=f"comma-separated, of: {','.join(ROWS)}")
    args = parser.parse_args()
    if args.pairs < 5:
        parser.error("--pairs must be at least 5")
    selected = set(args.only.split(",")) if args.only else set(ROWS)
    if not selected <= set(ROWS):
        parser.error(f"unknown row(s): {', '.join(sorted(selected - set(ROWS)))}")
    install_missing_tools()
    compileall.compile_dir(ROOT / "qemuser", quiet=1)  # no start pays for a stale .pyc
    chosen = boots(selected)
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {now}, {machine()}, pairs={args.pairs}")
    print(f"# {' '.join(['benchmarks/system_boot.py', *sys.argv[1:]])}")
    print("# Linux boot to /init and power-off; riscv64: QEMU runs its own OpenSBI (fw_dynamic),")
    print("# qemuser its built-in SBI")
    header = ("boot", "qemuser s", "qemu s", "ratio", "min ratio", "bar", "", "RSS qemuser")
    header += ("RSS qemu", "RSS ratio")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    failed = False
    for boot in chosen:
        failed |= report(boot, measure(boot, args.pairs))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
