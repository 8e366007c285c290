"""Bad images give one-line errors, never a traceback, and are never modified by the attempt."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from qemuser.cli import img as img_cli
from qemuser.cli import imgio as io_cli
from tests.block.conftest import digest, run

MiB = 1 << 20
CS = 65536


def make(tmp_path: Path) -> Path:
    """A small qcow2 by QEMU: data in clusters 0-2, a snapshot; layout: header 0, reftable
    0x10000, refblock 0x20000, L1 0x30000, L2 0x40000, data from 0x50000."""
    path = tmp_path / "good.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", path, "4M")
    run("qemu-io", "-c", "write -P 0x21 0 192k", path)
    run("qemu-img", "snapshot", "-c", "s1", path)
    return path


def poke(offset: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    def edit(b: bytearray) -> None:
        struct.pack_into(fmt, b, offset, value)

    return edit


def truncate(n: int) -> Callable[[bytearray], None]:
    def edit(b: bytearray) -> None:
        del b[n:]

    return edit


CORRUPTIONS: dict[str, tuple[Callable[[bytearray], None], str]] = {
    "header truncated": (truncate(50), "qcow2 header is truncated"),
    "tables cut off": (truncate(0x38000), "offset invalid"),
    "cluster_bits 7": (poke(20, ">I", 7), "Unsupported cluster size: 2^7"),
    "cluster_bits 32": (poke(20, ">I", 32), "Unsupported cluster size: 2^32"),
    "version 4": (poke(4, ">I", 4), "Unsupported qcow2 version 4"),
    "L1 beyond file": (poke(40, ">Q", 0x7F0000), "Active L1 table offset invalid"),
    "L1 misaligned": (poke(40, ">Q", 0x30200), "Active L1 table offset invalid"),
    "L1 too small": (poke(36, ">I", 0), "L1 table is too small"),
    "reftable misaligned": (poke(48, ">Q", 0x10200), "Reference count table offset invalid"),
    "reftable beyond file": (poke(48, ">Q", 0x7F0000), "Reference count table offset invalid"),
    "refblock beyond file": (poke(0x10000, ">Q", 0x7F0000), "beyond the end of the image file"),
    "snapshot table beyond": (poke(64, ">Q", 0x7F0000), "Snapshot table offset invalid"),
    "unknown feature": (
        poke(72, ">Q", 1 << 40),
        "Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000",
    ),
    "external data file": (
        poke(72, ">Q", 1 << 2),
        "Unsupported qcow2 feature(s): external data file",
    ),
    "L2 beyond file": (
        poke(0x30000, ">Q", (1 << 63) | 0x7F0000),
        "L2 table offset 0x7f0000 beyond the end",
    ),
    "L2 misaligned": (poke(0x30000, ">Q", 0x40200), "L2 table offset 0x40200 unaligned"),
    "data beyond file": (poke(0x40000, ">Q", 0x7F0000), "Cluster offset 0x7f0000 beyond"),
    "data misaligned": (
        poke(0x40000, ">Q", 0x50200),
        "Cluster allocation offset 0x50200 unaligned",
    ),
}

COMMANDS: list[tuple[str, list[str]]] = [
    ("img", ["info", "IMG"]),
    ("img", ["check", "IMG"]),
    ("img", ["check", "-r", "all", "IMG"]),
    ("img", ["map", "--output=json", "IMG"]),
    ("img", ["convert", "-O", "raw", "IMG", "OUT"]),
    ("img", ["compare", "IMG", "IMG"]),
    ("img", ["snapshot", "-c", "new", "IMG"]),
    ("img", ["snapshot", "-a", "s1", "IMG"]),
    ("img", ["snapshot", "-d", "s1", "IMG"]),
    ("img", ["resize", "IMG", "+1M"]),
    ("img", ["amend", "-o", "compat=1.1", "IMG"]),
    ("io", ["-c", "read 0 64k", "IMG"]),
    ("io", ["-c", "write -P 3 0 64k", "IMG"]),
    ("io", ["-c", "write -z 0 64k", "IMG"]),
    ("io", ["-c", "discard 0 64k", "IMG"]),
]


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_image(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    good = make(tmp_path)
    edit, message = CORRUPTIONS[name]
    raw = bytearray(good.read_bytes())
    edit(raw)
    bad = tmp_path / "bad.qcow2"
    seen_message = False
    failures = 0
    for tool, args in COMMANDS:
        bad.write_bytes(raw)
        before = digest(bad)
        argv = [
            str(bad) if a == "IMG" else str(tmp_path / "out.raw") if a == "OUT" else a for a in args
        ]
        status = (img_cli.main if tool == "img" else io_cli.main)(argv)
        out = capsys.readouterr()
        assert "Traceback" not in out.err
        seen_message |= message in out.err + out.out
        if args[0] == "check" and status in (2, 3):
            # a report of what is wrong, not an error; -r all may write (that is its job)
            if "-r" not in args:
                assert digest(bad) == before
            continue
        if status == 0:
            continue
        failures += 1
        # one line per error, in our words; the file's bytes are as they were
        lines = [
            ln
            for ln in (out.err + out.out).splitlines()
            if ln and "failed" in ln or ln.startswith("qemuser-")
        ]
        assert lines, (args, out)
        assert digest(bad) == before, f"{args} changed the image"
    assert failures >= 3
    assert seen_message, f"no command said {message!r}"


def test_refcount_overflow_leaves_image_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / "one.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", img, "1M")
    run("qemu-io", "-c", "write -P 1 0 64k", img)
    before = digest(img)
    assert img_cli.main(["snapshot", "-c", "s", str(img)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "qemuser-img: Could not create snapshot 's': Refcount of cluster 4 would "
        "overflow (it is 1, the maximum is 1 with refcount_bits=1)\n"
    )
    assert digest(img) == before
    run("qemu-img", "check", img)


def test_corrupt_compressed_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "a.raw"
    raw.write_bytes(b"abcd" * (CS // 4) * 4)
    img = tmp_path / "c.qcow2"
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, img)
    data = bytearray(img.read_bytes())
    l2 = struct.unpack_from(">Q", data, 0x40000)[0]
    coffset = l2 & ((1 << 54) - 1)
    data[coffset : coffset + 64] = b"\xff" * 64
    img.write_bytes(data)
    before = digest(img)
    assert io_cli.main(["-c", "read 0 4k", str(img)]) == 1
    out = capsys.readouterr().out
    assert out == f"read failed: Corrupt compressed cluster at offset {coffset:#x}\n"
    assert digest(img) == before
