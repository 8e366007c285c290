"""A busybox initramfs for Debian's arm64 kernel: a cpio "newc" archive written here, gzipped.

Writing the archive ourselves (rather than running cpio over a staged tree) lets it hold
/dev/console as a device node without root, and keeps the entries' owners and times fixed.
Layout of each entry (the kernel's Documentation/driver-api/early-userspace/buffer-format.rst):
"070701", thirteen 8-digit hex fields (ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
devminor, rdevmajor, rdevminor, namesize, check), the name with its NUL, padded to 4 bytes, then
the data, padded to 4 bytes; a "TRAILER!!!" entry ends the archive.
"""

from __future__ import annotations

import gzip
import lzma
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system.debian import CACHE, _extracted

NEWC_MAGIC = b"070701"


@dataclass(frozen=True)
class Entry:
    name: str  # path inside the archive, without a leading slash
    mode: int  # file type and permission bits, as st_mode
    data: bytes = b""  # file contents, or a symbolic link's target
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node


def newc(entries: list[Entry]) -> bytes:
    """The cpio newc archive of `entries`, trailer included."""
    out = bytearray()
    for ino, entry in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        fields = (
            ino if entry.name != "TRAILER!!!" else 0,
            entry.mode,
            0,  # uid: root
            0,  # gid
            2 if stat.S_ISDIR(entry.mode) else 1,  # nlink
            0,  # mtime
            len(entry.data),
            0,  # devmajor, devminor: the archive's own device, unused by the kernel
            0,
            entry.rdev[0],
            entry.rdev[1],
            len(name),
            0,  # check: only for the "070702" crc format
        )
        out += NEWC_MAGIC + b"".join(b"%08X" % value for value in fields) + name
        out += bytes(-len(out) % 4)
        out += entry.data
        out += bytes(-len(out) % 4)
    return bytes(out)


def busybox_arm64() -> Path:
    """Debian's statically linked arm64 busybox (busybox-static:arm64)."""
    return _extracted("busybox-static:arm64") / "bin" / "busybox"


def busybox_initramfs(name: str, init_script: str) -> Path:
    """cache/system/<name>.cpio.gz: busybox, /dev/console and an /init running `init_script`."""
    busybox = busybox_arm64()
    path = CACHE / f"{name}.cpio.gz"
    directory, executable = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755
    entries = [
        Entry("bin", directory),
        Entry("bin/busybox", executable, busybox.read_bytes()),
        Entry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        Entry("dev", directory),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("proc", directory),
        Entry("sys", directory),
        Entry("tmp", directory),
        Entry("init", executable, init_script.encode()),
    ]
    archive = gzip.compress(newc(entries), mtime=0)
    if not path.exists() or path.read_bytes() != archive:
        partial = path.with_suffix(".partial")
        partial.write_bytes(archive)
        partial.rename(path)
    return path


def arm64_modules(kernel: Path, modules: Sequence[str]) -> list[Path]:
    """The kernel package's own modules (paths under lib/modules/<version>/kernel), in load
    order; the test is skipped when the package has no such module."""
    version = kernel.name.removeprefix("vmlinuz-")
    return modules_in(CACHE / "k" / "lib" / "modules" / version / "kernel", modules)


def modules_in(directory: Path, modules: Sequence[str]) -> list[Path]:
    found = []
    for module in modules:
        source = directory / module
        if not source.exists():
            pytest.skip(f"{source} not in the kernel package")
        found.append(source)
    return found


def initramfs_with_modules(
    path: Path,
    init_script: str,
    modules: Sequence[Path],
    busybox: Path,
    extra: Sequence[Entry] = (),
) -> None:
    """An uncompressed initramfs: busybox, /dev/console, `modules` under /modules (an .xz one
    decompressed: busybox's insmod takes the plain module), `extra` entries (parents before
    children), and /init: `init_script` with `{insmods}` replaced by one insmod per module."""
    directory, executable = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755
    entries = [
        Entry("bin", directory),
        Entry("bin/busybox", executable, busybox.read_bytes()),
        Entry("dev", directory),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("modules", directory),
        *extra,
    ]
    insmods = []
    for module in modules:
        data, name = module.read_bytes(), module.name
        if name.endswith(".xz"):
            data, name = lzma.decompress(data), name.removesuffix(".xz")
        entries.append(Entry(f"modules/{name}", stat.S_IFREG | 0o644, data))
        insmods.append(f"insmod /modules/{name}")
    init = init_script.replace("{insmods}", "\n".join(insmods))
    entries.append(Entry("init", executable, init.encode()))
    path.write_bytes(newc(entries))
