"""Debian trixie riscv64 packages (Debian 12 has no riscv64; trixie has it as a release
architecture), fetched once into cache/ with apt-get and dpkg-deb -x.

apt runs with a configuration of its own under /tmp (its sources list, lists and status), so the
machine's apt sources and dpkg state are never touched: the same mirror URI as the machine's
own sources, suite trixie, architecture riscv64.

    python tests/real/trixie.py root      # the userland root (bash, coreutils, python3.13, ...)
    python tests/real/trixie.py kernel    # the kernel Image and its modules

Both are idempotent and safe to run from several pytest workers at once (a file lock).
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CACHE = ROOT / "cache"
ARCH = "riscv64"
SUITE = "trixie"
APT_DIR = Path("/tmp/qemuser-apt-trixie")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# A userland for the riscv64 twin of tests/real: shells, coreutils, busybox, python3.13 with
# threads/subprocess/sqlite3/sockets, and the libraries they load (dependencies resolved by apt
# below, so this lists only what the tests run).
USERLAND = (
    "bash",
    "coreutils",
    "busybox-static",
    "grep",
    "sed",
    "findutils",
    "python3.13-minimal",
    "libpython3.13-minimal",
    "libpython3.13-stdlib",
    "libsqlite3-0",
)


class FetchError(Exception):
    pass


def mirror() -> str:
    """The Debian mirror of this machine's own apt sources (deb822 or one-line format)."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M
        ):
            if "debian" in uri and "security" not in uri:
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def apt_options() -> list[str]:
    return [
        "-o", f"Dir::Etc::sourcelist={APT_DIR / 'sources.list'}",
        "-o", "Dir::Etc::sourceparts=-",
        "-o", f"Dir::State::Lists={APT_DIR / 'lists'}",
        "-o", f"Dir::Cache={APT_DIR / 'cache'}",
        "-o", f"Dir::State::status={APT_DIR / 'status'}",
        "-o", f"APT::Architectures::={ARCH}",
        "-o", f"APT::Architecture={ARCH}",
        "-o", "APT::Sandbox::User=root",
        "-o", "Debug::NoLocking=1",
    ]  # fmt: skip


def _apt_ready() -> None:
    """Our own sources list and package lists (refreshed once a day)."""
    (APT_DIR / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (APT_DIR / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (APT_DIR / "status").touch()
    sources = f"deb [arch={ARCH} signed-by={KEYRING}] {mirror()} {SUITE} main\n"
    listfile = APT_DIR / "sources.list"
    fresh = listfile.exists() and listfile.read_text() == sources
    lists = list((APT_DIR / "lists").glob("*Packages*"))
    if fresh and lists:
        return
    listfile.write_text(sources)
    run = subprocess.run(
        ["apt-get", *apt_options(), "update", "-q"], capture_output=True, text=True
    )
    if run.returncode != 0:
        raise FetchError(f"apt-get update (trixie/{ARCH}) failed: {run.stderr.strip()[-300:]}")


def resolve(packages: tuple[str, ...]) -> list[str]:
    """`packages` and their Depends/Pre-Depends, recursively (no recommends), as apt sees them
    for riscv64 in trixie; virtual packages are left out (a real provider is listed too)."""
    run = subprocess.run(
        ["apt-cache", *apt_options(), "depends", "--recurse", "--no-recommends",
         "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
         *packages],
        capture_output=True, text=True,
    )  # fmt: skip
    if run.returncode != 0:
        raise FetchError(f"apt-cache depends failed: {run.stderr.strip()[-300:]}")
    names = []
    for line in run.stdout.splitlines():
        if line and not line.startswith(" ") and not line.startswith("<"):
            name = line.split(":")[0]
            if name not in names:
                names.append(name)
    return names


def _download(names: list[str], into: Path) -> list[Path]:
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    run = subprocess.run(
        ["apt-get", *apt_options(), "download", "-q", *names],
        cwd=into, capture_output=True, text=True,
    )  # fmt: skip
    if run.returncode != 0:
        raise FetchError(f"apt-get download failed: {run.stderr.strip()[-300:]}")
    return sorted(into.glob("*.deb"))


def kernel_packages() -> list[str]:
    """The kernel metapackage and the versioned image it names (nothing else: the initramfs
    tools it pulls in are not needed, the tests build their own initramfs)."""
    run = subprocess.run(
        ["apt-cache", *apt_options(), "depends", "linux-image-riscv64"],
        capture_output=True, text=True,
    )  # fmt: skip
    images = re.findall(r"Depends: (linux-image-[0-9]\S*)", run.stdout)
    if run.returncode != 0 or not images:
        raise FetchError("apt-cache depends linux-image-riscv64 found no kernel image")
    return ["linux-image-riscv64", images[0]]


def _extract_root(
    name: str, packages: tuple[str, ...], what: str, with_dependencies: bool = True
) -> Path:
    target = CACHE / name
    stamp = target / ".qemuser-stamp"
    key = hashlib.sha256(" ".join(("merged-usr", *packages)).encode()).hexdigest()[:16]
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / ".trixie.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == key:
            return target
        _apt_ready()
        names = resolve(packages) if with_dependencies else kernel_packages()
        debs = _download(names, CACHE / f"debs-{name}")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True)
        # trixie is merged-/usr: its packages install under usr/ and base-files' symlinks
        # (/bin -> usr/bin, /lib -> usr/lib, ...) make the old paths work, such as the ELF
        # interpreter /lib/ld-linux-riscv64-lp64d.so.1.
        for top in ("bin", "sbin", "lib", "lib64"):
            if (partial / "usr" / top).is_dir() and not (partial / top).exists():
                (partial / top).symlink_to(f"usr/{top}")
        (partial / ".qemuser-stamp").write_text(key)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        print(f"trixie: {what} in {target}", file=sys.stderr)
        return target


def ensure_userland() -> Path:
    """The extracted riscv64 userland root."""
    return _extract_root(f"debian-{SUITE}-{ARCH}-root", USERLAND, "userland")


def ensure_kernel() -> tuple[Path, Path]:
    """(kernel Image, extracted package root with /lib/modules) of trixie's riscv64 kernel."""
    root = _extract_root(
        f"debian-{SUITE}-{ARCH}-kernel", ("linux-image-riscv64",), "kernel", with_dependencies=False
    )
    images = sorted((root / "boot").glob("vmlinu*"))
    if not images:
        raise FetchError(f"no kernel image in {root / 'boot'}")
    return images[-1], root


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "root"
    try:
        print(ensure_kernel()[0] if which == "kernel" else ensure_userland())
    except FetchError as exc:
        sys.exit(f"trixie: {exc}")
