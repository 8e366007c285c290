"""qemuser-img convert against qemu-img convert, on a 1 GiB qcow2 made by qemu-img.

    .venv/bin/python benchmarks/img_convert.py [--pairs N] [--size-mib M] [--compress]

The source is a qcow2 image of --size-mib MiB (default 1024), mostly allocated with non-zero
data (one MiB in 16 is left unallocated), made by qemu-img from a raw file in a temporary
directory. Each pair runs `qemu-img convert -O qcow2 src dst` and `qemuser-img convert -O qcow2
src dst` once each, alternating which goes first; the destination is removed before each run
and the page cache is shared (the source is read from cache after the first run, as it would
be for both). The two outputs are checked equal with `qemu-img compare`. Printed: each run's
wall time, the median of each side, the ratio of medians and the ratio of the minima
(qemuser/qemu-img).

Needs Debian's qemu-utils (qemu-img).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
MiB = 1 << 20


def make_source(directory: Path, size_mib: int) -> Path:
    raw = directory / "src.raw"
    block = bytearray(os.urandom(MiB))
    with open(raw, "wb") as f:
        for i in range(size_mib):
            if i % 16 == 15:
                f.seek(MiB, os.SEEK_CUR)  # a hole: unallocated in the qcow2
                continue
            block[:8] = i.to_bytes(8, "little")  # every MiB differs
            f.write(block)
        f.truncate(size_mib * MiB)
    src = directory / "src.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, src], check=True)
    raw.unlink()
    return src


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--compress", action="store_true", help="convert -c (compressed output)")
    args = ap.parse_args()
    if shutil.which("qemu-img") is None:
        print("img_convert: qemu-img is missing (apt-get install qemu-utils)", file=sys.stderr)
        return 1
    extra = ["-c"] if args.compress else []
    with tempfile.TemporaryDirectory(prefix="img-convert-", dir=os.environ.get("TMPDIR")) as d:
        directory = Path(d)
        src = make_source(directory, args.size_mib)
        print(f"source: {args.size_mib} MiB qcow2, {src.stat().st_size // MiB} MiB on disk")
        sides = {
            "qemu-img": ["qemu-img", "convert", *extra, "-O", "qcow2"],
            "qemuser-img": [str(VENV_BIN / "qemuser-img"), "convert", *extra, "-O", "qcow2"],
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        for i in range(args.pairs):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                dst = directory / f"{name}.qcow2"
                dst.unlink(missing_ok=True)
                t = timed([*sides[name], str(src), str(dst)])
                times[name].append(t)
                print(f"pair {i + 1}: {name:12} {t:7.3f} s", flush=True)
        same = subprocess.run(
            ["qemu-img", "compare", directory / "qemu-img.qcow2", directory / "qemuser-img.qcow2"],
            capture_output=True,
            text=True,
        )
        if same.returncode != 0:
            print(f"outputs differ: {same.stdout.strip()} {same.stderr.strip()}")
            return 1
        med = {n: statistics.median(t) for n, t in times.items()}
        low = {n: min(t) for n, t in times.items()}
        for n in sides:
            print(f"{n:12} median {med[n]:7.3f} s  min {low[n]:7.3f} s")
        print(
            f"ratio qemuser-img/qemu-img: median {med['qemuser-img'] / med['qemu-img']:.2f}, "
            f"min-to-min {low['qemuser-img'] / low['qemu-img']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
