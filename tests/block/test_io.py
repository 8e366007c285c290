"""qemuser-io's commands and output, next to QEMU's qemu-io on copies of the same image."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.block.conftest import qemu_check, run

TIMING = re.compile(
    r"^[\d.]+ (bytes|KiB|MiB|GiB), 1 ops; 00\.\d\d sec \([\d.]+ (bytes|KiB|MiB|GiB)"
    r"/sec and [\d.]+ ops/sec\)$"
)
BARE = re.compile(r"^\d+,1,0:00:00\.\d\d,[\d.]+,[\d.]+$")


def normalise(text: str) -> list[str]:
    """qemu-io's output with the timing figures (which differ run to run) replaced."""
    out = []
    for line in text.splitlines():
        if TIMING.match(line):
            out.append(line.split(";")[0] + "; TIMING")
        elif BARE.match(line):
            out.append(",".join(line.split(",")[:2]) + ",BARE")
        else:
            out.append(line)
    return out


COMMANDS = [
    "info",
    "write -P 0xab 0 128k",
    "read -P 0xab 0 4k",
    "write -z 64k 64k",
    "discard 192k 64k",
    "aio_write -P 5 0 4k",
    "aio_flush",
    "readv -P 5 0 2k 2k",
    "writev -P 6 8k 1k 1k",
    "aio_read -P 6 8k 2k",
    "read -P 7 0 512",
    "read -v 0 20",
    "flush",
    "map",
    "length",
    "read 64M 512",
    "write -P 300 0 1",
    "read 0 abc",
    "write -c -P 9 1M 64k",
    "read -P 9 1M 64k",
    "read -C 0 4k",
    "read -q 0 1",
    "alloc 0 64k",
    "close",
    "read 0 1",
    "open -o driver=qcow2 IMG",
    "read -P 0xab 20k 1k",
]


def test_same_output_as_qemu_io(tmp_path: Path) -> None:
    img = tmp_path / "a.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
    run("qemu-img", "snapshot", "-c", "s", img)
    ours_img, theirs_img = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    shutil.copy(img, ours_img)
    shutil.copy(img, theirs_img)

    def args(path: Path) -> list[str]:
        out = []
        for c in COMMANDS:
            out += ["-c", c.replace("IMG", str(path))]
        return out + [str(path)]

    ours = run("qemuser-io", *args(ours_img), check=False)
    theirs = run("qemu-io", *args(theirs_img), check=False)
    assert normalise(ours.stdout) == normalise(theirs.stdout)
    assert sorted(ours.stderr.splitlines()) == sorted(
        theirs.stderr.replace("qemu-io", "qemuser-io").splitlines()
    )
    assert ours.returncode == theirs.returncode == 1
    assert "wrote 131072/131072 bytes at offset 0" in ours.stdout
    assert "Pattern verification failed at offset 0, 512 bytes" in ours.stdout
    qemu_check(ours_img)
    assert run("qemu-img", "compare", ours_img, theirs_img).returncode == 0


def test_exit_status_and_errors(tmp_path: Path) -> None:
    img = tmp_path / "r.raw"
    img.write_bytes(bytes(1 << 20))
    p = run(
        "qemuser-io", "-f", "raw", "-c", "write -P 1 0 1k", "-c", "read -P 1 0 1k", img, script=True
    )
    lines = p.stdout.splitlines()
    assert lines[0] == "wrote 1024/1024 bytes at offset 0"
    assert TIMING.match(lines[1]) and lines[1].startswith("1 KiB, 1 ops; ")
    assert lines[2] == "read 1024/1024 bytes at offset 0"
    p = run("qemuser-io", "-c", "read 0 512", tmp_path / "missing", check=False)
    assert (p.returncode, p.stderr) == (
        1,
        f"qemuser-io: can't open device {tmp_path}/missing: Could not open "
        f"'{tmp_path}/missing': No such file or directory\n",
    )
    p = run("qemuser-io", "-c", "bogus", "-f", "raw", img, check=False)
    assert (p.returncode, p.stderr) == (1, 'command "bogus" not found\n')
    # a probed raw image: QEMU's warning, and block 0 may not become a qcow2 header
    p = run("qemuser-io", "-c", "write -P 0x51 0 1", img, check=False)
    assert p.stderr.startswith(
        f"WARNING: Image format was not specified for '{img}' and probing guessed raw.\n"
    )
    p = run("qemuser-io", "-r", "-f", "raw", "-c", "write 0 1", img, check=False)
    assert p.returncode == 1 and p.stdout == "write failed: Permission denied\n"


def test_snapshot_mode_leaves_the_image_alone(tmp_path: Path) -> None:
    img = tmp_path / "s.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
    before = img.read_bytes()
    p = run("qemuser-io", "-s", "-c", "write -P 4 0 4k", "-c", "read -P 4 0 4k", img)
    assert p.stdout.splitlines()[2] == "read 4096/4096 bytes at offset 0"
    assert img.read_bytes() == before
    run("qemu-io", "-c", "read -P 0 0 4k", img)


def test_map_and_alloc_show_this_layer_only(tmp_path: Path) -> None:
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
    run("qemu-io", "-c", "write -P 1 0 64k", "-c", "write -z 1M 64k", base)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
    run("qemu-io", "-c", "write -P 2 64k 64k", "-c", "write -z 128k 64k", top)
    cmds = ["-c", "map", "-c", "alloc 0 128k", "-c", "alloc 1M 64k", "-c", "alloc 128k"]
    ours = run("qemuser-io", "-r", *cmds, top)
    theirs = run("qemu-io", "-r", *cmds, top)
    assert ours.stdout == theirs.stdout
    assert ours.stdout.startswith("64 KiB (0x10000) bytes not allocated at offset 0 bytes (0x0)\n")
