"""A root of real Debian arm64 packages, fetched once into cache/ (apt-get download, dpkg-deb -x).

Run as a script (setup.sh does) or through `ensure_root()` (the tests' session fixture does); both
are idempotent and safe to run from several pytest workers at once (a file lock serialises them).
The root is rebuilt when the package list below changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CACHE = ROOT / "cache"
ARCH = "arm64"

# What the tests run (busybox, python3.11, bash and coreutils) and the libraries they load.
PACKAGES = (
    "busybox-static",
    "libc6",
    "libgcc-s1",
    "zlib1g",
    "libexpat1",
    "libssl3",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    # a userland for processes, pipelines and CPython's sqlite3/ctypes (issue 3's tests)
    "bash",
    "libtinfo6",
    "coreutils",
    "libacl1",
    "libattr1",
    "libselinux1",
    "libpcre2-8-0",
    "libgmp10",
    "grep",
    "sed",
    "findutils",
    "tar",
    "libsqlite3-0",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
    "libncursesw6",
    "libreadline8",
    "libcrypt1",
)


def root_dir(name: str = f"debian-{ARCH}-root") -> Path:
    return CACHE / name


def _stamp(packages: tuple[str, ...]) -> str:
    return hashlib.sha256(" ".join(packages).encode()).hexdigest()[:16]


def _apt_knows_arch() -> bool:
    probe = subprocess.run(
        ["apt-cache", "show", f"busybox-static:{ARCH}"], capture_output=True, text=True
    )
    return probe.returncode == 0 and "Package:" in probe.stdout


def _enable_arch() -> None:
    """dpkg --add-architecture arm64 and apt-get update (root needed, done once per machine)."""
    if _apt_knows_arch():
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "dpkg", "--add-architecture", ARCH], check=True)
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)


def ensure_root(packages: tuple[str, ...] = PACKAGES, name: str = f"debian-{ARCH}-root") -> Path:
    """Returns the extracted root of `packages` (by default the tests' root), downloading and
    extracting them first if needed."""
    target = root_dir(name)
    stamp = target / ".qemuser-stamp"
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / ".debroot.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == _stamp(packages):
            return target
        _enable_arch()
        debs = CACHE / f"debs-{name}"
        shutil.rmtree(debs, ignore_errors=True)  # only this run's versions, one per package
        debs.mkdir()
        names = [f"{pkg}:{ARCH}" for pkg in packages]
        subprocess.run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *names],
            cwd=debs,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(target, ignore_errors=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for pkg in packages:
            found = [*debs.glob(f"{pkg}_*_{ARCH}.deb"), *debs.glob(f"{pkg}_*_all.deb")]
            if len(found) != 1:
                raise RuntimeError(f"apt-get download gave {found} for {pkg}:{ARCH}")
            subprocess.run(["dpkg-deb", "-x", str(found[0]), str(partial)], check=True)
        (partial / ".qemuser-stamp").write_text(_stamp(packages))
        partial.rename(target)
        return target


if __name__ == "__main__":
    print(ensure_root())
    sys.exit(0)
