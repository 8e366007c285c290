"""Side-by-side benchmarks: qemuser against Debian's qemu-user, on the same machine in the same run.

    .venv/bin/python benchmarks/run.py [--runs N] [--only compute-aarch64,startup,...] [--strict]

Builds its workloads (static C programs with Debian's cross compilers, into cache/bench/), runs
each under qemuser and qemu-user alternately (--runs times each side, at least 3), checks that both
sides print the same output and exit 0, and prints the median wall time of each side, the ratio
qemuser/qemu-user, the bar from issue 6 and the peak RSS of each side. The CPython workload runs
Debian's arm64 python3.11 from the root that tests/real fetches (cache/debian-arm64-root).

Exit status: 1 if a workload failed or the two sides disagreed; with --strict, 2 if a ratio is over
its bar; 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = Path(__file__).resolve().parent / "workloads"
BUILD = ROOT / "cache" / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
COMPUTE_ROUNDS = "3000"  # 1-3 s under qemu-user: the loop, not start-up, dominates
GNU_TIME = "/usr/bin/time"  # Debian package "time", installed by setup.sh


@dataclass(frozen=True)
class Bench:
    name: str
    arch: str
    bar: float  # ratio of medians qemuser/qemu-user that issue 6 asks for
    argv: tuple[str, ...]  # guest program and its arguments
    sysroot: Path | None = None


@dataclass
class Side:
    times: list[float]
    peak_rss_kib: int
    output: bytes


def build(arch: str, source: str) -> Path:
    """Compiles workloads/<source> statically for `arch` (only when the source is newer)."""
    src = WORKLOADS / source
    out = BUILD / f"{src.stem}-{arch}"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        gcc = f"{arch}-linux-gnu-gcc"
        if shutil.which(gcc) is None:
            sys.exit(f"benchmarks: {gcc} is missing: run ./setup.sh first")
        subprocess.run([gcc, "-O2", "-static", "-o", str(out), str(src)], check=True)
    return out


def run_once(cmd: list[str]) -> tuple[float, int, bytes, int]:
    """Wall time, peak RSS (KiB), stdout and exit status of one run.

    The peak RSS comes from GNU time: a child forked by this (big) Python process would inherit its
    high-water mark, while GNU time forks from a small process and reports its child's own.
    """
    with tempfile.NamedTemporaryFile() as rss, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", rss.name, *cmd], stdout=subprocess.PIPE, stderr=err
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace")[-2000:])
        peak = Path(rss.name).read_text().split()
    return elapsed, int(peak[-1]) if peak else 0, proc.stdout, proc.returncode


def command(side: str, bench: Bench) -> list[str]:
    if side == "qemuser":
        cmd = [str(VENV_BIN / f"qemuser-{bench.arch}")]
    else:
        cmd = [f"qemu-{bench.arch}"]
    if bench.sysroot is not None:
        cmd += ["-L", str(bench.sysroot)]
    return cmd + list(bench.argv)


def measure(bench: Bench, runs: int) -> dict[str, Side] | str:
    sides: dict[str, Side] = {}
    for _ in range(runs):
        for side in ("qemuser", "qemu-user"):  # alternate, so that drift hits both alike
            elapsed, rss, out, status = run_once(command(side, bench))
            if status != 0:
                return f"{side} exited with status {status}"
            entry = sides.setdefault(side, Side([], 0, out))
            if out != entry.output:
                return f"{side} printed different output on two runs"
            entry.times.append(elapsed)
            entry.peak_rss_kib = max(entry.peak_rss_kib, rss)
    if sides["qemuser"].output != sides["qemu-user"].output:
        return (
            f"outputs differ: qemuser {sides['qemuser'].output[:80]!r}"
            f" qemu-user {sides['qemu-user'].output[:80]!r}"
        )
    return sides


def benches(selected: set[str] | None) -> list[Bench]:
    def want(name: str) -> bool:
        return selected is None or name in selected

    found: list[Bench] = []
    for arch, bar in (("aarch64", 3.0), ("riscv64", 3.5)):
        if want(f"compute-{arch}"):
            found.append(
                Bench(f"compute-{arch}", arch, bar, (str(build(arch, "compute.c")), COMPUTE_ROUNDS))
            )
    if want("startup"):
        found.append(Bench("startup", "aarch64", 10.0, (str(build("aarch64", "hello.c")),)))
    if want("cpython") or want("syscalls"):
        sys.path.insert(0, str(ROOT))
        from tests.real.debroot import ensure_root  # the root the real-program tests use

        root = ensure_root()
        if want("cpython"):
            script = str(WORKLOADS / "pyloop.py")
            python = str(root / "usr" / "bin" / "python3.11")
            found.append(Bench("cpython", "aarch64", 3.0, (python, "-S", script), root))
        if want("syscalls"):
            # busybox's dd (coreutils' needs more libraries than the root holds): 32 MiB in 4 KiB.
            data = BUILD / "dd-32MiB.bin"
            if not data.exists() or data.stat().st_size != 32 << 20:
                BUILD.mkdir(parents=True, exist_ok=True)
                data.write_bytes(os.urandom(32 << 20))
            dd = (str(root / "bin" / "busybox"), "dd", f"if={data}", "of=/dev/null", "bs=4k")
            found.append(Bench("syscalls", "aarch64", 5.0, dd, root))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (at least 3)")
    parser.add_argument(
        "--only", help="comma-separated: compute-aarch64,compute-riscv64,startup,cpython,syscalls"
    )
    parser.add_argument("--strict", action="store_true", help="exit 2 when a ratio is over its bar")
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3")
    for tool in ("qemu-aarch64", "qemu-riscv64", GNU_TIME):
        if shutil.which(tool) is None:
            sys.exit(
                f"benchmarks: {tool} is missing: run ./setup.sh (it installs qemu-user and time)"
            )
    selected = set(args.only.split(",")) if args.only else None

    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}, runs={args.runs}")
    header = ("workload", "qemuser s", "qemu-user s", "ratio", "bar", "", "RSS qemuser", "RSS qemu")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    failed = over = False
    for bench in benches(selected):
        result = measure(bench, args.runs)
        if isinstance(result, str):
            print(f"| {bench.name} | FAILED: {result} |", flush=True)
            failed = True
            continue
        ours = statistics.median(result["qemuser"].times)
        theirs = statistics.median(result["qemu-user"].times)
        ratio = ours / theirs
        verdict = "ok" if ratio <= bench.bar else "OVER"
        over |= ratio > bench.bar
        row = (
            bench.name,
            f"{ours:.3f}",
            f"{theirs:.3f}",
            f"{ratio:.2f}",
            f"{bench.bar:g}",
            verdict,
            f"{result['qemuser'].peak_rss_kib / 1024:.0f} MiB",
            f"{result['qemu-user'].peak_rss_kib / 1024:.0f} MiB",
        )
        print("| " + " | ".join(row) + " |", flush=True)
    if failed:
        return 1
    return 2 if over and args.strict else 0


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
