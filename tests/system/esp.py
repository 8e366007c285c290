"""A raw disk image holding a GPT with one EFI system partition, built without root from Debian's
own tools: sfdisk (package fdisk) writes the partition table into a plain file, and mtools formats
and fills the FAT inside it at the partition's byte offset (`-i image@@offset`), so no loop device
or mount is needed. On the ESP go Debian's monolithic GRUB (grub-efi-arm64-bin's grubaa64.efi as
the removable-media loader \\EFI\\BOOT\\BOOTAA64.EFI, which EDK2's boot manager starts from a
disk with no boot entry of its own), its grub.cfg, a kernel and an initramfs.

`loop_device` attaches an image to a loop device (root only) for QEMU's `host_device` protocol,
detaching it whatever happens."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.system.debian import CACHE, _extracted

ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"  # the UEFI spec's EFI system partition GUID
SECTOR = 512
ALIGN = 2048  # first partition at 1 MiB, as sfdisk and parted place it
# command -> the Debian package that has it (setup.sh installs them; tests install on demand)
HOST_TOOLS = {"sfdisk": "fdisk", "mformat": "mtools", "mmd": "mtools", "mcopy": "mtools"}
# Debian builds the monolithic image with prefix /EFI/debian, and its embedded configuration
# sources $prefix/grub.cfg when that exists (else $cmdpath/grub.cfg).
GRUB_CFG_PATH = "EFI/debian/grub.cfg"


def ensure_host_tools() -> None:
    """sfdisk and mtools on the host: apt-get installs what is missing (as root, once, under a
    lock so parallel workers do not run apt at the same time); otherwise the test is skipped."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".apt-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if any(shutil.which(tool) is None for tool in HOST_TOOLS):
            done = subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
            if done.returncode != 0:
                pytest.skip(f"apt-get install {' '.join(missing)} failed: {done.stderr[-200:]}")


def esp_image(path: Path, files: Mapping[str, bytes | Path], size_mib: int = 0) -> int:
    """Writes `path`: a GPT disk whose only partition is an ESP, a FAT file system holding
    `files` (ESP path with '/' separators -> contents or a host file). The disk is `size_mib`
    MiB, or big enough for the files when 0. Returns the partition's byte offset."""
    ensure_host_tools()
    payload = sum(len(d) if isinstance(d, bytes) else d.stat().st_size for d in files.values())
    size_mib = size_mib or max(64, payload // (1 << 20) + 16)
    path.unlink(missing_ok=True)
    with open(path, "wb") as image:
        image.truncate(size_mib << 20)
    table = f'label: gpt\nstart={ALIGN}, type={ESP_TYPE}, name="EFI system partition"\n'
    _run(["sfdisk", "-q", str(path)], table)
    part = json.loads(_run(["sfdisk", "--json", str(path)]))["partitiontable"]["partitions"][0]
    start, sectors = part["start"], part["size"]
    target = f"{path}@@{start * SECTOR}"
    # -T: the partition's own size (by default mformat would run to the end of the file, over
    # the backup GPT); -H: the sectors before it, as a formatter on a real disk records them.
    _run(["mformat", "-i", target, "-T", str(sectors), "-H", str(start), "-v", "ESP", "::"])
    made: set[str] = set()
    for name in sorted(files):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in made:
                _run(["mmd", "-i", target, f"::{folder}"])
                made.add(folder)
        data = files[name]
        source = data if isinstance(data, Path) else path.with_name(path.name + ".part")
        if isinstance(data, bytes):
            source.write_bytes(data)
        _run(["mcopy", "-i", target, str(source), f"::{name}"])
        if isinstance(data, bytes):
            source.unlink()
    return start * SECTOR


def _run(command: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def grub_efi_arm64() -> Path:
    """Debian's monolithic arm64 GRUB (every module built in, as Debian's signed one is)."""
    monolithic = _extracted("grub-efi-arm64-bin:arm64") / "usr/lib/grub/arm64-efi/monolithic"
    return monolithic / "grubaa64.efi"


def grub_esp(path: Path, kernel: Path, initrd: Path, cmdline: str) -> int:
    """An ESP that EDK2 boots without any set-up: GRUB as the removable-media loader, with a
    grub.cfg that starts `kernel` (an EFI-stub Image) with `initrd` and `cmdline` at once (no
    menu, so no timeout). Returns the partition's byte offset."""
    config = f"linux /vmlinuz {cmdline}\ninitrd /initrd\nboot\n"
    return esp_image(
        path,
        {
            "EFI/BOOT/BOOTAA64.EFI": grub_efi_arm64(),
            GRUB_CFG_PATH: config.encode(),
            "vmlinuz": kernel,
            "initrd": initrd,
        },
    )


def esp_listing(path: Path, offset: int, folder: str = "") -> list[str]:
    """The names in an ESP folder, as mtools reads them back (`mdir -b`)."""
    listing = _run(["mdir", "-b", "-i", f"{path}@@{offset}", f"::{folder}"])
    return sorted(line.rstrip("/").rsplit("/", 1)[-1] for line in listing.splitlines() if line)


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[Path | None]:
    """`image` attached to a free loop device (`losetup -f --show`), detached on the way out
    whatever happens; None when loop devices cannot be used here (not root, no losetup, no free
    device), so the caller falls back to QEMU's plain `file` protocol."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        yield None
        return
    attach = subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True, timeout=60
    )
    device = attach.stdout.strip()
    if attach.returncode != 0 or not device.startswith("/dev/loop"):
        yield None
        return
    try:
        yield Path(device)
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, timeout=60)
