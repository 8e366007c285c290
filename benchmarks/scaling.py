"""How cost grows with the work: time against work size, qemuser and qemu-user side by side.

    .venv/bin/python benchmarks/scaling.py [--pairs N] [--only compute,fileio,processes,threads]

For each dimension and size, the same workload runs under both emulators alternately (--pairs
pairs, default 3; the medians are printed) and the table shows each side's wall time, its cost
per unit of work and the ratio, so a reader sees whether qemuser's cost is linear where qemu's is:
- compute: compute.c's store-heavy loop, 10^7 to 10^9 iterations (aarch64, static);
- fileio: Debian's arm64 coreutils dd reading a file of 1 MiB to 1 GiB in 4 KiB blocks;
- processes: Debian's arm64 bash starting 10 to 1000 foreign `true`;
- threads: threads.c with 1 to 64 threads (2000 token hand-overs each).
Both sides must print the same output and exit 0, as in benchmarks/run.py (whose helpers this
uses, including the binfmt_misc sandbox the qemu-user side of the processes rows needs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path

from run import (
    BUILD,
    FORKS,
    ROOT,
    Bench,
    Side,
    binfmt_sandbox,
    build,
    foreign_true,
    install_missing_tools,
    machine,
    measure,
)

INNER = 1 << 16  # iterations of compute.c's inner loop per round
DIMENSIONS = ("compute", "fileio", "processes", "threads")


def data_file(size: int) -> Path:
    path = BUILD / f"scaling-{size >> 20}MiB.bin"
    if not path.exists() or path.stat().st_size != size:
        BUILD.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for _ in range(size >> 20):
                out.write(os.urandom(1 << 20))
    return path


def rows(dimension: str) -> list[tuple[str, int, Bench]]:
    """(unit, amount of work, bench) for each size of one dimension."""
    if dimension == "compute":
        prog = str(build("aarch64", "compute.c"))
        found = []
        for n in (10**7, 10**8, 10**9):
            name = f"compute 1e{len(str(n)) - 1}"
            found.append(("iteration", n, Bench(name, "aarch64", 0, (prog, str(n // INNER)))))
        return found
    sys.path.insert(0, str(ROOT))
    from tests.real.debroot import ensure_root

    root = ensure_root()
    if dimension == "fileio":
        found = []
        for size in (1 << 20, 16 << 20, 256 << 20, 1 << 30):
            dd = (str(root / "bin" / "dd"), f"if={data_file(size)}", "of=/dev/null", "bs=4k")
            found.append(("MiB", size >> 20, Bench(f"dd {size >> 20} MiB", "aarch64", 0, dd, root)))
        return found
    if dimension == "processes":
        true = foreign_true(root)
        found = []
        for count in (10, 100, 1000):
            loop = f"for i in $(seq {count}); do {true}; done; echo {count} done"
            argv = (str(root / "bin" / "bash"), "-c", loop)
            bench = Bench(f"{count} spawns", "aarch64", 0, argv, root, True, True)
            found.append(("spawn", count, bench))
        return found
    prog = str(build("aarch64", "threads.c", "-pthread"))
    return [
        ("thread", n, Bench(f"{n} threads", "aarch64", 0, (prog, "2000", str(n))))
        for n in (1, 4, 16, 64)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs per size")
    parser.add_argument("--only", help=f"comma-separated, of: {','.join(DIMENSIONS)}")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(DIMENSIONS)
    unknown = set(chosen) - set(DIMENSIONS)
    if unknown:
        parser.error(f"unknown dimension(s): {', '.join(sorted(unknown))}")
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    install_missing_tools()
    print(f"# {machine()}, pairs={args.pairs}, medians")
    print("| work | qemuser s | per unit | qemu-user s | per unit | ratio |")
    print("|---|---|---|---|---|---|")
    failed = False
    with contextlib.ExitStack() as stack:
        binfmt = stack.enter_context(binfmt_sandbox()) if "processes" in chosen else None
        for dimension in chosen:
            for unit, amount, bench in rows(dimension):
                result = measure(bench, args.pairs, binfmt)
                if isinstance(result, str):
                    print(f"| {bench.name} | FAILED: {result} |", flush=True)
                    failed = True
                    continue
                print(row(bench.name, unit, amount, result), flush=True)
    return 1 if failed else 0


def row(name: str, unit: str, amount: int, result: dict[str, Side]) -> str:
    ours = statistics.median(result["qemuser"].times)
    theirs = statistics.median(result["qemu-user"].times)

    def per(seconds: float) -> str:
        each = seconds / amount
        return f"{each * 1e9:.1f} ns/{unit}" if each < 1e-6 else f"{each * 1e3:.3f} ms/{unit}"

    cells = (name, f"{ours:.3f}", per(ours), f"{theirs:.3f}", per(theirs), f"{ours / theirs:.2f}")
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    assert FORKS  # run.py's processes row and these rows start the same program
    sys.exit(main())
