"""What one foreign exec costs through qemuser's binfmt_misc handler, against qemuser-aarch64.

    .venv/bin/python benchmarks/foreign_exec.py [--pairs N]      (root: it registers a handler)

Issue 12, point 4: a foreign program started through the handler (the static interpreter the
kernel opened at registration, flags POF) must cost no more than the same program started with
`qemuser-aarch64` outside. Rows, each run --pairs times alternately on both sides (this
machine's speed swings between runs; alternating makes a swing hit both sides alike), each run
checked for the same output and exit status on both sides:

  hello        tests/fixtures' static aarch64 hello: `./hello-static` by name, against
               `qemuser-aarch64 hello-static`;
  true-chroot  Debian's arm64 /bin/true (dynamic, ld.so and libc from the root) in a chroot of
               cache/debian-arm64-root without /proc, against `qemuser-aarch64 -L ROOT`;
  bash-40      Debian's arm64 bash starting 40 foreign programs in that chroot with /proc mounted
               (as container runtimes have it), against `qemuser-aarch64 -L ROOT`
               (the guest's own fork/execve: qemuser runs those children in process, both sides);
  bash-40-noproc  the same in the chroot without /proc: each guest execve then has no
               /proc/self/fd to find the fds to close and tries every descriptor up to
               RLIMIT_NOFILE (qemuser/user/spawn.py), which the outside side does not pay.

It prints the median and fastest wall time of each side and their ratios.

    .venv/bin/python benchmarks/foreign_exec.py --debootstrap

times instead debootstrap's second stage (`debootstrap --foreign --arch=arm64 --variant=minbase
bookworm`, the mirror of this machine's apt sources; then `chroot DIR /debootstrap/debootstrap
--second-stage`, in a private mount namespace) once through qemuser's handler and once through
Debian's qemu-user-static (qemu-aarch64-static taken from its .deb with apt-get download and
dpkg-deb -x, never installed, registered for the run with the same flags POF). Minutes.

binfmt_misc is restored exactly as found afterwards (entries, status, mount), whatever happens;
the lock the binfmt tests take keeps them from running at the same time.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from qemuser.binfmt.handler import DEFAULT_FLAGS, claims, handler_for, parse_entry
from qemuser.binfmt.system import (
    BINFMT_DIR,
    SPECIAL,
    InstallOptions,
    ensure_mounted,
    install,
    register,
    remove,
)
from qemuser.cpu import CPUS

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HELLO = ROOT / "tests/fixtures/out/aarch64/hello-static"
DEBIAN_ROOT = ROOT / "cache/debian-arm64-root"
FORKS = 40


def _snapshot() -> dict[str, str]:
    state = {p.name: p.read_text() for p in BINFMT_DIR.iterdir() if p.name not in SPECIAL}
    return state | {"status": (BINFMT_DIR / "status").read_text()}


def _restore(before: dict[str, str]) -> None:
    for path in BINFMT_DIR.iterdir():
        if path.name not in SPECIAL and before.get(path.name) != path.read_text():
            path.write_text("-1")
    for name, text in before.items():
        if name != "status" and not (BINFMT_DIR / name).exists():
            register(parse_entry(name, text))
    (BINFMT_DIR / "status").write_text("1" if before["status"].startswith("enabled") else "0")


@contextlib.contextmanager
def registered(work: Path) -> Iterator[Path]:
    """qemuser's aarch64 handler with install's defaults, for the duration; then binfmt_misc
    exactly as before."""
    with binfmt_restored():
        libexec = work / "libexec"
        options = InstallOptions(flags=DEFAULT_FLAGS, replace=True)
        line = install(CPUS["aarch64"], options, state=work / "state", libexec=libexec)
        print(f"# {line}", file=sys.stderr)
        yield libexec


@contextlib.contextmanager
def binfmt_restored() -> Iterator[None]:
    """binfmt_misc exactly as found afterwards, whatever is registered meanwhile."""
    lock = open(Path(tempfile.gettempdir()) / "qemuser-binfmt-tests.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    was_mounted = (BINFMT_DIR / "register").exists()
    try:
        ensure_mounted()
        before = _snapshot()
        try:
            yield
        finally:
            _restore(before)
            assert _snapshot() == before, "binfmt_misc was not restored"
    finally:
        if not was_mounted:
            subprocess.run(["umount", str(BINFMT_DIR)], check=False)
        lock.close()


def qemu_user_static() -> Path:
    """qemu-aarch64-static from Debian's qemu-user-static .deb, unpacked into cache/ (the
    package is not installed: its scripts would register handlers machine-wide)."""
    where = ROOT / "cache/qemu-user-static"
    binary = where / "usr/bin/qemu-aarch64-static"
    if not binary.exists():
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", "qemu-user-static"],
            cwd=where,
            check=True,
        )
        deb = next(where.glob("qemu-user-static_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(where)], check=True)
        deb.unlink()
    return binary


def mirror() -> str:
    import re

    from qemuser.binfmt.build import deb_src_lines

    for line in deb_src_lines():
        found = re.search(r"(\S+/debian)/? bookworm ", line)
        if found:
            return found.group(1)
    sys.exit("benchmarks: no Debian bookworm archive in /etc/apt")


def debootstrap(work: Path) -> int:
    """The second stage through each handler, from the same first stage (a tarball)."""
    if shutil.which("debootstrap") is None:
        sys.exit("benchmarks: debootstrap is not installed (apt-get install debootstrap)")
    tarball = work / "stage1.tgz"
    base = ["debootstrap", "--arch=arm64", "--variant=minbase"]
    subprocess.run(
        [*base, f"--make-tarball={tarball}", "bookworm", str(work / "t"), mirror()],
        check=True,
        capture_output=True,
    )
    qemu = qemu_user_static()
    spec = CPUS["aarch64"]
    results = {}
    with binfmt_restored():
        for side in ("qemuser", "qemu-user-static"):
            for entry in BINFMT_DIR.iterdir():  # nothing else may take arm64 files meanwhile
                if entry.name not in SPECIAL and claims(
                    parse_entry(entry.name, entry.read_text()), spec
                ):
                    remove(entry.name)
            if side == "qemuser":
                options = InstallOptions(flags=DEFAULT_FLAGS, replace=True)
                install(spec, options, state=work / "state", libexec=work / "libexec")
            else:
                register(handler_for(spec, str(qemu), DEFAULT_FLAGS))
            root = work / side
            subprocess.run(
                [*base, "--foreign", f"--unpack-tarball={tarball}", "bookworm", str(root)],
                check=True,
                capture_output=True,
            )
            private = ["unshare", "--mount", "--propagation", "private", "chroot", str(root)]
            seconds, out, status = timed([*private, "/debootstrap/debootstrap", "--second-stage"])
            done = out.rstrip().endswith(b"I: Base system installed successfully.")
            results[side] = seconds
            print(
                f"debootstrap second stage via {side:17} {seconds:7.1f} s  exit {status}"
                f"{'' if done and status == 0 else '  FAILED'}"
            )
            if not done or status != 0:
                return 1
    print(
        f"ratio qemuser / qemu-user-static: {results['qemuser'] / results['qemu-user-static']:.1f}"
    )
    return 0


def timed(command: list[str], **kwargs: object) -> tuple[float, bytes, int]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - start, result.stdout, result.returncode


def row(name: str, handler: list[str], outside: list[str], pairs: int) -> bool:
    ours, theirs = [], []
    ok = True
    for _ in range(pairs):
        for side, command, times in (("handler", handler, ours), ("outside", outside, theirs)):
            seconds, out, status = timed(command)
            times.append(seconds)
            if side == "handler":
                expected = (out, status)
            elif (out, status) != expected:
                print(f"{name}: the sides disagree: {expected!r} vs {(out, status)!r}")
                ok = False
    if expected[1] != 0:
        print(f"{name}: exit status {expected[1]}")
        ok = False
    med_h, med_o = statistics.median(ours), statistics.median(theirs)
    print(
        f"{name:12} handler {med_h * 1000:8.1f} ms (min {min(ours) * 1000:7.1f})"
        f"   qemuser-aarch64 {med_o * 1000:8.1f} ms (min {min(theirs) * 1000:7.1f})"
        f"   ratio {med_h / med_o:5.2f} (min-to-min {min(ours) / min(theirs):5.2f})"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--debootstrap", action="store_true", help="time the second stage")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks: registering a binfmt_misc handler needs root")
    if args.debootstrap:
        with tempfile.TemporaryDirectory(prefix="qemuser-bench-") as tmp:
            return debootstrap(Path(tmp))
    for needed in (HELLO, DEBIAN_ROOT / "bin/bash"):
        if not needed.exists():
            sys.exit(f"benchmarks: {needed} is missing (run ./setup.sh)")
    qemuser = str(BIN / "qemuser-aarch64")
    ok = True
    with tempfile.TemporaryDirectory(prefix="qemuser-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        root = work / "root"
        shutil.copytree(DEBIAN_ROOT, root, symlinks=True)
        hello = work / "hello-static"
        shutil.copy(HELLO, hello)
        loop = f"for i in $(seq {FORKS}); do /bin/true; done; echo done"
        with registered(work):
            ok &= row("hello", [str(hello)], [qemuser, str(hello)], args.pairs)
            ok &= row(
                "true-chroot",
                ["chroot", str(root), "/bin/true"],
                [qemuser, "-L", str(root), str(root / "bin/true")],
                args.pairs,
            )
            # as container runtimes have it: /proc mounted inside
            (root / "proc").mkdir()
            with_proc = (
                f"mount -t proc proc {root}/proc && exec chroot {root} /bin/bash -c '{loop}'"
            )
            private = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
            ok &= row(
                f"bash-{FORKS}",
                [*private, with_proc],
                [
                    *private,
                    f"mount -t proc proc {root}/proc && exec {qemuser} -L {root}"
                    f" {root}/bin/bash -c '{loop}'",
                ],
                max(3, args.pairs // 2),
            )
            (root / "proc").rmdir()
            ok &= row(
                f"bash-{FORKS}-noproc",
                ["chroot", str(root), "/bin/bash", "-c", loop],
                [qemuser, "-L", str(root), str(root / "bin/bash"), "-c", loop],
                max(3, args.pairs // 2),
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
