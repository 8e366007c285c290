"""-kernel with a legacy U-Boot image (mkimage -A arm64|riscv -T kernel), as QEMU accepts it:
the bare-metal hello, wrapped here with its load address and entry point, boots the same."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.system.conftest import fixture, run_system

HEADER = struct.Struct(">IIIIIIIBBBB32s")  # U-Boot's include/image.h, struct legacy_img_hdr
ARCH_CODE = {"aarch64": 22, "riscv64": 26}  # IH_ARCH_ARM64, IH_ARCH_RISCV
KERNEL, COMP_NONE, COMP_GZIP = 2, 0, 1


def elf_entry_and_load(elf: Path) -> tuple[int, int]:
    """e_entry and the lowest PT_LOAD physical address of a 64-bit little-endian ELF."""
    data = elf.read_bytes()
    entry, phoff = struct.unpack_from("<QQ", data, 24)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    loads = []
    for i in range(phnum):
        p_type, _flags, _offset, _vaddr, paddr = struct.unpack_from(
            "<IIQQQ", data, phoff + i * phentsize
        )
        if p_type == 1:
            loads.append(paddr)
    return entry, min(loads)


def uimage(
    payload: bytes, arch: str, load: int, entry: int, comp: int = COMP_NONE, kind: int = KERNEL
) -> bytes:
    body = gzip.compress(payload) if comp == COMP_GZIP else payload
    fields = [
        0x27051956,
        0,
        0,
        len(body),
        load,
        entry,
        zlib.crc32(body),
        5,
        ARCH_CODE[arch],
        kind,
        comp,
        b"qemuser test",
    ]
    fields[1] = zlib.crc32(HEADER.pack(*fields))
    return HEADER.pack(*fields) + body


def raw_hello(arch: str, tmp_path: Path) -> tuple[bytes, int, int]:
    elf = fixture(f"hello-{arch}.elf")
    objcopy = shutil.which(f"{arch}-linux-gnu-objcopy")
    assert objcopy, "the cross binutils come with setup.sh's cross compilers"
    raw = tmp_path / "hello.bin"
    subprocess.run([objcopy, "-O", "binary", str(elf), str(raw)], check=True)
    entry, load = elf_entry_and_load(elf)
    return raw.read_bytes(), load, entry


@pytest.mark.parametrize("comp", [COMP_NONE, COMP_GZIP], ids=["plain", "gzip"])
@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_uimage_kernel_boots_like_the_elf(arch: str, comp: int, tmp_path: Path) -> None:
    payload, load, entry = raw_hello(arch, tmp_path)
    image = tmp_path / "hello.uimg"
    image.write_bytes(uimage(payload, arch, load, entry, comp))
    result = run_system(arch, "-M", "virt", "-nographic", "-bios", "none", "-kernel", str(image))
    assert (result.stdout, result.stderr, result.returncode) == (f"hello from {arch} virt\n", "", 0)


def test_bad_uimages_are_one_line_errors(tmp_path: Path) -> None:
    payload, load, entry = raw_hello("aarch64", tmp_path)
    good = uimage(payload, "aarch64", load, entry)
    cases = {
        "truncated": (good[:-5], "is a truncated or corrupt U-Boot image"),
        "other-arch": (
            uimage(payload, "riscv64", load, entry),
            "is a U-Boot image for another architecture",
        ),
        "ramdisk": (
            uimage(payload, "aarch64", load, entry, kind=3),
            "is a U-Boot image of type 3, not a kernel",
        ),
        "bad-data": (good[:-1] + bytes([good[-1] ^ 1]), "U-Boot image data checksum mismatch"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.uimg"
        path.write_bytes(data)
        result = run_system("aarch64", "-M", "virt", "-nographic", "-kernel", str(path))
        assert result.returncode == 1, name
        assert result.stdout == "", name
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and message in lines[0] and str(path) in lines[0], (name, lines)
