"""Side-by-side benchmarks: qemuser against Debian's qemu-user, on the same machine in the same run.

    .venv/bin/python benchmarks/run.py [--pairs N] [--only compute-aarch64,startup,...] [--strict]

Builds its workloads (C programs with Debian's cross compilers, into cache/bench/), runs each under
qemuser and qemu-user alternately (--pairs qemuser/qemu-user pairs, at least 5: this machine's
speed swings 2-3x between runs, and alternating makes a swing hit both sides alike), checks that
both sides print the same output and exit 0 on every run, and prints for each workload the median
wall time of each side, the ratio of the medians, the ratio of the fastest runs (min-to-min: the
least disturbed run of each side), the bar from issue 13, and the peak RSS of each side with its
ratio (bar: 2x qemu's). The CPython workload runs Debian's arm64 python3.11 from the root that
tests/real fetches (cache/debian-arm64-root); the gcc workload runs Debian's arm64 gcc-12 from a
second root fetched the same way (cache/debian-arm64-gcc-root).

The "processes" workload is Debian's arm64 bash starting 40 foreign programs (`true`, dynamic) in a
loop. qemu-user runs a foreign child only through binfmt_misc, so its side runs with Debian's
qemu-aarch64 handler registered (and any other handler that would take arm64 files disabled);
qemuser runs its children itself, so its side runs with that handler removed again. The machine's
binfmt_misc state (entries, status, whether it was mounted) is restored afterwards, whatever
happens; the lock the binfmt tests take keeps them from running at the same time.

On a fresh machine, what the workloads need from Debian (qemu-user, GNU time, the cross compilers)
is installed with apt-get when missing (as root); qemu-user-binfmt is not, since its installation
would register handlers machine-wide.

Exit status: 1 if a workload failed or the two sides disagreed; with --strict, 2 if a ratio of
medians (or an RSS ratio) is over its bar; 0 otherwise.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import fcntl
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qemuser.binfmt.handler import Handler, claims, elf_magic, parse_entry
from qemuser.binfmt.system import (
    BINFMT_DIR,
    SPECIAL,
    BinfmtError,
    ensure_mounted,
    entries,
    register,
    remove,
)
from qemuser.cpu.aarch64 import AARCH64

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = Path(__file__).resolve().parent / "workloads"
BUILD = ROOT / "cache" / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
COMPUTE_ROUNDS = "3000"  # 1-3 s under qemu-user: the loop, not start-up, dominates
BRANCHY_ROUNDS = "8000"  # ~1.5 s under qemu-user
THREAD_ROUNDS = "4000"  # token hand-overs per thread (8 threads): ~0.7 s under qemu-user
SMALL_FILES = 2000  # files of 1-4 KiB that the "smallfiles" workload cats
RSS_BAR = 2.0  # peak RSS at most 2x qemu's (issue 13)
GNU_TIME = "/usr/bin/time"  # Debian package "time", installed by setup.sh
FORKS = 40  # foreign programs the "processes" workload starts
# Debian packages that provide what the workloads need, by the command they provide.
DEBIAN_TOOLS = {
    "qemu-aarch64": "qemu-user",
    "qemu-riscv64": "qemu-user",
    GNU_TIME: "time",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "riscv64-linux-gnu-gcc": "gcc-riscv64-linux-gnu",
}
# Debian's registration of qemu-aarch64 (package qemu-user-binfmt), when installed.
DEBIAN_BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
BENCH_HANDLER = "qemuser-bench-qemu-aarch64"  # our own name: never clashes with a real entry
# The lock tests/cli/test_binfmt_kernel.py holds while it changes binfmt_misc.
BINFMT_LOCK = Path(tempfile.gettempdir()) / "qemuser-binfmt-tests.lock"


@dataclass(frozen=True)
class Bench:
    name: str
    arch: str
    bar: float  # ratio of medians qemuser/qemu-user that issue 13 asks for
    argv: tuple[str, ...]  # guest program and its arguments
    sysroot: Path | None = None
    # Give the sysroot as QEMU_LD_PREFIX instead of -L, so that foreign children (which qemu-user
    # starts through binfmt_misc, as new qemu-user processes) find it too.
    sysroot_in_env: bool = False
    # qemu-user's side needs its binfmt_misc handler registered (foreign children).
    needs_binfmt: bool = False


@dataclass
class Side:
    times: list[float]
    peak_rss_kib: int
    output: bytes


def build(arch: str, source: str, *flags: str) -> Path:
    """Compiles workloads/<source> statically for `arch` (only when the source is newer)."""
    src = WORKLOADS / source
    out = BUILD / f"{src.stem}-{arch}"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        gcc = f"{arch}-linux-gnu-gcc"
        if shutil.which(gcc) is None:
            sys.exit(f"benchmarks: {gcc} is missing: run ./setup.sh first")
        subprocess.run([gcc, "-O2", "-static", *flags, "-o", str(out), str(src)], check=True)
    return out


def run_once(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, bytes, int]:
    """Wall time, peak RSS (KiB), stdout and exit status of one run.

    The peak RSS comes from GNU time: a child forked by this (big) Python process would inherit its
    high-water mark, while GNU time forks from a small process and reports its child's own.
    """
    with tempfile.NamedTemporaryFile() as rss, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", rss.name, *cmd],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace")[-2000:])
        peak = Path(rss.name).read_text().split()
    return elapsed, int(peak[-1]) if peak else 0, proc.stdout, proc.returncode


def command(side: str, bench: Bench) -> tuple[list[str], dict[str, str] | None]:
    """The command line and environment (None: ours) of one side."""
    if side == "qemuser":
        cmd = [str(VENV_BIN / f"qemuser-{bench.arch}")]
    else:
        cmd = [f"qemu-{bench.arch}"]
    env = None
    if bench.sysroot is not None and bench.sysroot_in_env:
        env = os.environ | {"QEMU_LD_PREFIX": str(bench.sysroot)}
    elif bench.sysroot is not None:
        cmd += ["-L", str(bench.sysroot)]
    return cmd + list(bench.argv), env


def measure(bench: Bench, pairs: int, binfmt: BinfmtSandbox | None) -> dict[str, Side] | str:
    sides: dict[str, Side] = {}
    for _ in range(pairs):
        for side in ("qemuser", "qemu-user"):  # alternate, so that drift hits both alike
            cmd, env = command(side, bench)
            handler = contextlib.nullcontext()
            if side == "qemu-user" and bench.needs_binfmt:
                assert binfmt is not None
                handler = binfmt.qemu_user_handler()
            with handler:
                elapsed, rss, out, status = run_once(cmd, env)
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


class BinfmtSandbox:
    """binfmt_misc for the qemu-user side of the "processes" workload.

    Made by `binfmt_sandbox()`, which restores the machine's binfmt_misc exactly as it found it.
    """

    def __init__(self) -> None:
        self.register_line = qemu_register_line()
        self.status = BINFMT_DIR / "status"

    @contextlib.contextmanager
    def qemu_user_handler(self) -> Iterator[None]:
        """qemu-aarch64 registered as the only handler of arm64 ELF files, for one run."""
        disabled: list[str] = []
        status_was = self.status.read_text().strip()
        try:
            for handler in entries():  # a qemuser handler, say, must not take qemu-user's files
                if handler.enabled and claims(handler, AARCH64):
                    (BINFMT_DIR / handler.name).write_text("0")
                    disabled.append(handler.name)
            if status_was != "enabled":
                self.status.write_text("1")
            (BINFMT_DIR / "register").write_text(self.register_line)
            yield
        finally:
            remove(BENCH_HANDLER)
            for name in disabled:
                (BINFMT_DIR / name).write_text("1")
            if status_was != "enabled":
                self.status.write_text("0")


def binfmt_snapshot() -> dict[str, str]:
    """Every entry's text, and the status, by file name."""
    return {path.name: path.read_text() for path in BINFMT_DIR.iterdir() if path.name != "register"}


def binfmt_restore(before: dict[str, str]) -> None:
    for path in BINFMT_DIR.iterdir():
        if path.name not in SPECIAL and before.get(path.name) != path.read_text():
            path.write_text("-1")
    for name, text in before.items():
        if name not in SPECIAL and not (BINFMT_DIR / name).exists():
            register(parse_entry(name, text))
    (BINFMT_DIR / "status").write_text("1" if before["status"].startswith("enabled") else "0")


@contextlib.contextmanager
def binfmt_sandbox() -> Iterator[BinfmtSandbox]:
    """Mounts binfmt_misc when needed; afterwards the entries, the status and the mount are as
    they were, also when a run fails or is interrupted."""
    if os.geteuid() != 0:
        sys.exit("benchmarks: the processes workload needs root (qemu-user's binfmt_misc handler)")
    with open(BINFMT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # binfmt_misc is one for the whole machine
        was_mounted = (BINFMT_DIR / "register").exists()
        try:
            ensure_mounted()
        except BinfmtError as exc:
            sys.exit(f"benchmarks: {exc}")
        before = binfmt_snapshot()
        # a kill (not only ^C) must also unwind through the restore below
        previous = {sig: signal.signal(sig, _exit_on_signal) for sig in STOP_SIGNALS}
        try:
            yield BinfmtSandbox()
        finally:
            try:
                binfmt_restore(before)
            finally:
                if not was_mounted:
                    subprocess.run(["umount", str(BINFMT_DIR)], check=False)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
WORKLOAD_NAMES = (
    "compute-aarch64",
    "compute-riscv64",
    "branchy-aarch64",
    "branchy-riscv64",
    "startup",
    "threads-aarch64",
    "threads-riscv64",
    "cpython",
    "syscalls",
    "smallfiles",
    "processes",
    "gcc",
)


def _exit_on_signal(sig: int, _frame: object) -> None:
    raise SystemExit(128 + sig)


def qemu_register_line() -> str:
    """Debian's registration of qemu-aarch64 under our own name; without qemu-user-binfmt, the
    same magic and mask with qemu-aarch64 itself as the interpreter."""
    if DEBIAN_BINFMT_CONF.exists():
        for line in DEBIAN_BINFMT_CONF.read_text().splitlines():
            if line.startswith(":"):
                _, _name, rest = line.split(":", 2)
                return f":{BENCH_HANDLER}:{rest}"
    magic, mask = elf_magic(AARCH64)
    qemu = shutil.which("qemu-aarch64") or "/usr/bin/qemu-aarch64"
    return Handler(BENCH_HANDLER, qemu, "", magic=magic, mask=mask).register_line()


def foreign_true(root: Path) -> Path:
    """A copy of the root's (dynamic, arm64) `true` at a path that exists only in the root, so
    that neither side can end up running the host's own `true`."""
    target = root / "qemuser-bench" / "true"
    source = root / "bin" / "true"
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        target.parent.mkdir(exist_ok=True)
        shutil.copy2(source, target)
    return target


def small_files() -> Path:
    """A tree of SMALL_FILES files of 1-4 KiB (made once), for the "smallfiles" workload."""
    tree = BUILD / "small-files"
    stamp = tree / ".complete"
    if not stamp.exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        for i in range(SMALL_FILES):
            (tree / f"f{i:05d}.txt").write_bytes(os.urandom(1024 + (i * 37) % 3072))
        stamp.write_text("")
    return tree


def benches(selected: set[str] | None) -> list[Bench]:
    def want(name: str) -> bool:
        return selected is None or name in selected

    found: list[Bench] = []
    for arch in ("aarch64", "riscv64"):
        if want(f"compute-{arch}"):
            argv = (str(build(arch, "compute.c")), COMPUTE_ROUNDS)
            found.append(Bench(f"compute-{arch}", arch, 1.5, argv))
        if want(f"branchy-{arch}"):
            argv = (str(build(arch, "branchy.c")), BRANCHY_ROUNDS)
            found.append(Bench(f"branchy-{arch}", arch, 1.5, argv))
    if want("startup"):
        found.append(Bench("startup", "aarch64", 4.0, (str(build("aarch64", "hello.c")),)))
    for arch in ("aarch64", "riscv64"):
        if want(f"threads-{arch}"):
            argv = (str(build(arch, "threads.c", "-pthread")), THREAD_ROUNDS, "8")
            found.append(Bench(f"threads-{arch}", arch, 2.0, argv))
    if want("cpython") or want("syscalls") or want("smallfiles") or want("processes"):
        sys.path.insert(0, str(ROOT))
        from tests.real.debroot import ensure_root  # the root the real-program tests use

        root = ensure_root()
        if want("cpython"):
            script = str(WORKLOADS / "pyloop.py")
            python = str(root / "usr" / "bin" / "python3.11")
            found.append(Bench("cpython", "aarch64", 1.5, (python, "-S", script), root))
        if want("processes"):
            loop = f"for i in $(seq {FORKS}); do {foreign_true(root)}; done; echo {FORKS} done"
            bash = str(root / "bin" / "bash")
            found.append(
                Bench(
                    "processes",
                    "aarch64",
                    1.2,
                    (bash, "-c", loop),
                    root,
                    sysroot_in_env=True,
                    needs_binfmt=True,
                )
            )
        if want("syscalls"):
            # Debian's coreutils dd (dynamic, from the root): 32 MiB in 4 KiB blocks, ~16k
            # read+write calls; its statistics go to stderr, which is not compared.
            data = BUILD / "dd-32MiB.bin"
            if not data.exists() or data.stat().st_size != 32 << 20:
                BUILD.mkdir(parents=True, exist_ok=True)
                data.write_bytes(os.urandom(32 << 20))
            dd = (str(root / "bin" / "dd"), f"if={data}", "of=/dev/null", "bs=4k")
            found.append(Bench("syscalls", "aarch64", 2.0, dd, root))
        if want("smallfiles"):
            # Debian's coreutils cat of SMALL_FILES small files, piped into its own sha256sum:
            # an openat/fstat/read/close per file, the per-call cost that dd's big loop hides.
            files = sorted(str(path) for path in small_files().glob("f*.txt"))
            cat = f"{root / 'bin' / 'cat'} {' '.join(files)} | {root / 'usr' / 'bin' / 'sha256sum'}"
            argv = (str(root / "bin" / "bash"), "-c", cat)
            found.append(Bench("smallfiles", "aarch64", 2.0, argv, root, True, True))
    if want("gcc"):
        sys.path.insert(0, str(ROOT))
        from benchmarks.gccroot import compile_job

        argv, gcc_root = compile_job(BUILD)
        found.append(Bench("gcc", "aarch64", 1.5, argv, gcc_root, True, True))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pairs", type=int, default=5, help="alternating qemuser/qemu-user pairs (at least 5)"
    )
    parser.add_argument("--only", help=f"comma-separated, of: {','.join(WORKLOAD_NAMES)}")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a ratio is over its bar")
    args = parser.parse_args()
    if args.pairs < 5:
        parser.error("--pairs must be at least 5")
    selected = set(args.only.split(",")) if args.only else None
    if selected is not None and not selected <= set(WORKLOAD_NAMES):
        parser.error(f"unknown workload(s): {', '.join(sorted(selected - set(WORKLOAD_NAMES)))}")
    install_missing_tools()
    # Byte-compile qemuser first: with PYTHONDONTWRITEBYTECODE set (or a read-only tree), a
    # module edited since its .pyc was written would be compiled again by every start.
    compileall.compile_dir(ROOT / "qemuser", quiet=1)

    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {now}, {machine()}, pairs={args.pairs}")
    print(f"# {' '.join(['benchmarks/run.py', *sys.argv[1:]])}")
    header = (
        "workload",
        "qemuser s",
        "qemu-user s",
        "ratio",
        "min ratio",
        "bar",
        "",
        "RSS qemuser",
        "RSS qemu",
        "RSS ratio",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    failed = over = False
    chosen = benches(selected)
    with contextlib.ExitStack() as stack:
        binfmt = None
        if any(bench.needs_binfmt for bench in chosen):
            binfmt = stack.enter_context(binfmt_sandbox())
        for bench in chosen:
            failed_now, over_now = report(bench, measure(bench, args.pairs, binfmt))
            failed |= failed_now
            over |= over_now
    if failed:
        return 1
    return 2 if over and args.strict else 0


def install_missing_tools(tools: dict[str, str] | None = None) -> None:
    """apt-get install what a fresh Debian machine lacks: of `tools` (command -> package; by
    default this script's: qemu-user, time, cross compilers), those not on PATH."""
    wanted = DEBIAN_TOOLS if tools is None else tools
    missing = sorted({pkg for tool, pkg in wanted.items() if shutil.which(tool) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"benchmarks: missing Debian packages {' '.join(missing)}: run ./setup.sh")
    print(f"# installing {' '.join(missing)} with apt-get", file=sys.stderr)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "env": env}
    subprocess.run(["apt-get", "update", "-q"], check=True, **quiet)
    # no recommends: qemu-user recommends qemu-user-binfmt, which registers handlers machine-wide
    install = ["apt-get", "install", "-q", "-y", "--no-install-recommends", *missing]
    subprocess.run(install, check=True, **quiet)


def report(bench: Bench, result: dict[str, Side] | str) -> tuple[bool, bool]:
    """Prints the table row of one workload; returns (failed, over a bar)."""
    if isinstance(result, str):
        print(f"| {bench.name} | FAILED: {result} |", flush=True)
        return True, False
    ours, theirs = result["qemuser"], result["qemu-user"]
    ratio = statistics.median(ours.times) / statistics.median(theirs.times)
    min_ratio = min(ours.times) / min(theirs.times)
    rss_ratio = ours.peak_rss_kib / max(theirs.peak_rss_kib, 1)
    over = ratio > bench.bar or rss_ratio > RSS_BAR
    row = (
        bench.name,
        f"{statistics.median(ours.times):.3f}",
        f"{statistics.median(theirs.times):.3f}",
        f"{ratio:.2f}",
        f"{min_ratio:.2f}",
        f"{bench.bar:g}",
        "OVER" if over else "ok",
        f"{ours.peak_rss_kib / 1024:.0f} MiB",
        f"{theirs.peak_rss_kib / 1024:.0f} MiB",
        f"{rss_ratio:.2f}",
    )
    print("| " + " | ".join(row) + " |", flush=True)
    return False, over


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
