"""The cost of one system call's round trip: qemuser against Debian's qemu-user.

    .venv/bin/python benchmarks/percall.py [--pairs N] [--calls N] [--arch aarch64,riscv64]

`workloads/percall.c` makes N calls of one kind (getppid: the bare round trip; rw4k: a 4 KiB
read from /dev/zero and a 4 KiB write to /dev/null; pipe: 4 KiB into a pipe and back). Each
emulator runs it with N and 2N calls, alternately (qemuser, qemu-user, qemuser, ... for
--pairs rounds); the cost of one call is the slope, (t(2N) - t(N)) / N, so that start-up
cancels out. Printed per mode: µs per call of each side from the medians, of wall time and of
CPU time (user + system of the child: on a machine others load, CPU time moves less than wall
time), and their ratio. Both sides must print the same line, or the mode fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.run import VENV_BIN, build  # noqa: E402  (the path above first)

MODES = ("getppid", "rw4k", "pipe")
# calls per syscall of a round: rw4k and pipe make two calls (read + write) per round
CALLS_PER_ROUND = {"getppid": 1, "rw4k": 2, "pipe": 2}


def run(cmd: list[str]) -> tuple[float, float, bytes]:
    """Wall time, CPU time (user + system) and stdout of one run; exits on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"percall: {' '.join(cmd)} failed (status {status:#x})")
    return wall, usage.ru_utime + usage.ru_stime, out


def slope(
    small: list[tuple[float, float]], big: list[tuple[float, float]], i: int, calls: int
) -> float:
    """µs per call between the medians of measure `i` (0 wall, 1 CPU) of the two sizes."""
    difference = statistics.median(t[i] for t in big) - statistics.median(t[i] for t in small)
    return 1e6 * difference / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50_000, help="N (rounds of the small run)")
    parser.add_argument("--arch", default="aarch64,riscv64")
    args = parser.parse_args()
    print(
        "| arch | mode | qemuser µs/call (wall, cpu) | qemu-user µs/call (wall, cpu) | cpu ratio |"
    )
    print("|---|---|---|---|---|")
    for arch in args.arch.split(","):
        program = str(build(arch, "percall.c"))
        sides = {"qemuser": [str(VENV_BIN / f"qemuser-{arch}")], "qemu-user": [f"qemu-{arch}"]}
        for mode in MODES:
            times: dict[tuple[str, int], list[tuple[float, float]]] = {}
            outputs: dict[int, set[bytes]] = {}
            for _ in range(args.pairs):
                for rounds in (args.calls, 2 * args.calls):
                    for side, prefix in sides.items():
                        wall, cpu, out = run([*prefix, program, mode, str(rounds)])
                        times.setdefault((side, rounds), []).append((wall, cpu))
                        outputs.setdefault(rounds, set()).add(out)
            if any(len(seen) != 1 for seen in outputs.values()):
                print(f"| {arch} | {mode} | FAILED: the two sides printed different lines |")
                continue
            calls = args.calls * CALLS_PER_ROUND[mode]
            cost: dict[str, tuple[float, float]] = {}
            for side in sides:
                small, big = times[(side, args.calls)], times[(side, 2 * args.calls)]
                wall, cpu = (slope(small, big, i, calls) for i in (0, 1))
                cost[side] = (wall, cpu)
            ours, theirs = cost["qemuser"], cost["qemu-user"]
            ratio = ours[1] / theirs[1] if theirs[1] > 0 else float("inf")
            print(
                f"| {arch} | {mode} | {ours[0]:.2f}, {ours[1]:.2f} | {theirs[0]:.2f}, "
                f"{theirs[1]:.2f} | {ratio:.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
