"""Debian packages for boot tests: fetched with apt-get download, cached in cache/system/."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CACHE = Path(__file__).resolve().parents[2] / "cache" / "system"


def _download(package: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["apt-get", "download", package], cwd=CACHE, capture_output=True, text=True, timeout=600
    )
    name = package.split(":", 1)[0]
    debs = sorted(CACHE.glob(f"{name}_*.deb"))
    if done.returncode != 0 or not debs:
        pytest.skip(f"apt-get download {package} failed: {done.stderr.strip()[-200:]}")
    return debs[-1]


def arm64_kernel() -> Path:
    """Debian's linux-image-cloud-arm64 Image (the meta package names the versioned one)."""
    found = sorted(CACHE.glob("k/boot/vmlinuz-*-cloud-arm64"))
    if found:
        return found[-1]
    meta = _download("linux-image-cloud-arm64:arm64")
    depends = subprocess.run(
        ["dpkg-deb", "-f", str(meta), "Depends"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(linux-image-[\w.-]+-cloud-arm64)", depends)
    if match is None:
        pytest.skip(f"cannot tell the kernel package from {depends!r}")
    deb = _download(f"{match.group(1)}:arm64")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(CACHE / "k")], check=True)
    return sorted(CACHE.glob("k/boot/vmlinuz-*-cloud-arm64"))[-1]


def _extracted(package: str) -> Path:
    """The package's files, unpacked once into cache/system/<package>/ (renamed into place
    when complete, so an interrupted run does not leave a half tree behind)."""
    dest = CACHE / package
    if not dest.is_dir():
        deb = _download(package)
        partial = CACHE / f"{package}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True)
        partial.rename(dest)
    return dest


def u_boot(board: str) -> Path:
    """Debian's u-boot-qemu image for a board directory (qemu_arm64, qemu-riscv64_smode)."""
    return _extracted("u-boot-qemu") / "usr" / "lib" / "u-boot" / board / "u-boot.bin"


def opensbi(firmware: str) -> Path:
    """Debian's OpenSBI generic-platform firmware (fw_jump.elf, fw_dynamic.bin, ...)."""
    return _extracted("opensbi") / "usr/lib/riscv64-linux-gnu/opensbi/generic" / firmware
