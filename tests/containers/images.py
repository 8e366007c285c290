"""A Debian arm64 root to use as a container image, made from real packages (cache/).

tests/real/debroot.py extracts the packages; this adds what an image made by debootstrap has
and dpkg needs: /bin/sh, an empty /tmp, and dpkg's database listing the extracted packages as
installed (so `dpkg -i` of a package depending on libc6 finds it). No /proc, /dev or /sys: the
chroot and pivot_root tests must work without them, and a container runtime mounts its own.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

from tests.real.debroot import ARCH, CACHE, PACKAGES, ensure_root

NAME = f"debian-{ARCH}-container-root"
# dpkg itself, what it loads and the programs it insists on finding (diff; ldconfig, from libc-bin)
PACKAGES_WITH_DPKG = (*PACKAGES, "dpkg", "libmd0", "libzstd1", "libc-bin", "diffutils")
IMAGE_STAMP = "image-2"


def _dpkg_database(root: Path, debs: Path) -> None:
    """var/lib/dpkg as if the packages had been installed (status, and each one's file list)."""
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    for sub in ("updates", "triggers", "alternatives"):
        (root / "var/lib/dpkg" / sub).mkdir(exist_ok=True)
    (root / "var/lib/dpkg/available").touch()
    stanzas = []
    for deb in sorted(debs.glob("*.deb")):
        control = subprocess.run(
            ["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True
        ).stdout.rstrip("\n")
        fields = dict(
            line.split(": ", 1) for line in control.splitlines() if ": " in line and line[0] != " "
        )
        lines = control.splitlines()
        lines.insert(1, "Status: install ok installed")
        stanzas.append("\n".join(lines) + "\n")
        listing = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
        ).stdout
        names = subprocess.run(
            ["tar", "-t"], input=listing, capture_output=True, check=True
        ).stdout.decode()
        paths = sorted({"/" + n.strip("./").rstrip("/") for n in names.splitlines()} - {"/"})
        multi = f":{ARCH}" if fields.get("Multi-Arch") == "same" else ""
        (info / f"{fields['Package']}{multi}.list").write_text("/.\n" + "\n".join(paths) + "\n")
    (root / "var/lib/dpkg/status").write_text("\n".join(stanzas))


def image_root() -> Path:
    """The prepared root (built once into cache/, rebuilt when its recipe changes)."""
    base = ensure_root(PACKAGES_WITH_DPKG, name=NAME)
    target = CACHE / f"{NAME}-image"
    stamp = target / ".qemuser-image-stamp"
    expected = (base / ".qemuser-stamp").read_text() + IMAGE_STAMP
    with open(CACHE / ".container-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == expected:
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(base, partial, symlinks=True)
        (partial / ".qemuser-stamp").unlink()
        (partial / "bin/sh").symlink_to("bash")
        (partial / "tmp").mkdir(mode=0o1777, exist_ok=True)
        (partial / "tmp").chmod(0o1777)
        (partial / "root").mkdir(mode=0o700, exist_ok=True)
        (partial / "var/log").mkdir(parents=True, exist_ok=True)  # dpkg.log
        _dpkg_database(partial, CACHE / f"debs-{NAME}")
        stamp_file = partial / ".qemuser-image-stamp"
        stamp_file.write_text(expected)
        partial.rename(target)
        return target


def extra_deb(package: str) -> Path:
    """A Debian arm64 package that is not in the image (for `dpkg -i` inside it)."""
    debs = CACHE / "debs-container-extra"
    debs.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".container-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(debs.glob(f"{package}_*_{ARCH}.deb"))
        if not found:
            subprocess.run(
                ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{package}:{ARCH}"],
                cwd=debs,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            found = sorted(debs.glob(f"{package}_*_{ARCH}.deb"))
        return found[-1]
