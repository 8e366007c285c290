"""qemuser-img against QEMU's qemu-img: images each makes are valid for the other, same output."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.block.conftest import VENV_BIN, digest, qemu_check, run

MiB = 1 << 20


def same_output(tmp_path: Path, *args: str) -> None:
    """qemuser-img and qemu-img print the same for a read-only command (in tmp_path)."""
    ours = run("qemuser-img", *args, cwd=tmp_path, check=False)
    theirs = run("qemu-img", *args, cwd=tmp_path, check=False)
    assert ours.stdout == theirs.stdout
    assert ours.returncode == theirs.returncode


@pytest.mark.parametrize(
    "opts",
    [
        "",
        "compat=0.10",
        "cluster_size=512",
        "cluster_size=4k,refcount_bits=1",
        pytest.param("cluster_size=2M,refcount_bits=64", marks=pytest.mark.slow),
        "lazy_refcounts=on",
        "preallocation=metadata",
        "preallocation=falloc,cluster_size=4k",
        pytest.param("preallocation=full", marks=pytest.mark.slow),
    ],
)
def test_created_images_pass_qemu_check(tmp_path: Path, opts: str) -> None:
    img = tmp_path / "a.qcow2"
    args = ["qemuser-img", "create", "-f", "qcow2"] + (["-o", opts] if opts else []) + [img, "3M"]
    p = run(*args)
    assert p.stdout.startswith(f"Formatting '{img}', fmt=qcow2 ")
    qemu_check(img)
    info = json.loads(run("qemu-img", "info", "--output=json", img).stdout)
    assert info["virtual-size"] == 3 * MiB
    assert info["format-specific"]["data"]["compat"] == ("0.10" if "compat" in opts else "1.1")
    # and it holds data: written by us, read back by qemu-io
    run("qemuser-io", "-c", "write -P 0x5a 1000 70000", "-c", "write -P 0x11 2M 1M", img)
    run("qemu-io", "-c", "read -P 0x5a 1000 70000", "-c", "read -P 0x11 2M 1M", img)
    qemu_check(img)


def test_create_matches_qemu_byte_for_byte(tmp_path: Path) -> None:
    for opts in ("compat=0.10,cluster_size=4k", "refcount_bits=8"):
        run("qemuser-img", "create", "-q", "-f", "qcow2", "-o", opts, tmp_path / "o.qcow2", "1G")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, tmp_path / "q.qcow2", "1G")
        ours = (tmp_path / "o.qcow2").read_bytes()
        theirs = (tmp_path / "q.qcow2").read_bytes()
        assert ours[: len(theirs)] == theirs
        assert not ours[len(theirs) :].strip(b"\0")  # we write the L1 cluster out whole


def test_formatting_line_and_raw(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
    for args in (
        [
            "-f",
            "qcow2",
            "-o",
            "compat=0.10,cluster_size=4k",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "x.qcow2",
            "1G",
        ],
        ["-f", "raw", "-o", "preallocation=falloc", "x.raw", "1M"],
        ["-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "y.qcow2"],
    ):
        same_output(tmp_path, "create", *args)
    assert (tmp_path / "x.raw").stat().st_size == MiB


def test_create_errors(tmp_path: Path) -> None:
    run("qemu-img", "create", "-q", "-f", "qcow2", tmp_path / "b.qcow2", "1M")
    cases = [
        (
            ["create", "-f", "qcow2", "-b", "b.qcow2", "z.qcow2"],
            "qemuser-img: z.qcow2: Backing file specified without backing format\n",
        ),
        (
            ["create", "-f", "qcow2", "z.qcow2"],
            "qemuser-img: z.qcow2: Image creation needs a size parameter\n",
        ),
        (
            ["create", "-f", "qcow2", "-o", "bogus=1", "z.qcow2", "1M"],
            "qemuser-img: z.qcow2: Invalid parameter 'bogus'\n",
        ),
        (
            ["bogus"],
            "qemuser-img: Command not found: bogus\n"
            "Try 'qemuser-img --help' for more information\n",
        ),
        (
            ["info", "-x", "a"],
            "qemuser-img: invalid option -- 'x'\nTry 'qemuser-img --help' for more information\n",
        ),
        (
            ["info", "nonexistent"],
            "qemuser-img: Could not open 'nonexistent': Could not open "
            "'nonexistent': No such file or directory\n",
        ),
    ]
    for args, stderr in cases:
        # the console script itself, as a user runs it
        p = run("qemuser-img", *args, cwd=tmp_path, check=False, script=True)
        assert (p.returncode, p.stderr) == (1, stderr)


def qemu_chain(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """base (compressed clusters, a snapshot, a zero cluster) <- top (its own writes)."""
    data = bytes(range(256)) * (3 * MiB // 256)
    raw = tmp_path / "src.raw"
    raw.write_bytes(data)
    plain = tmp_path / "plain.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, plain)
    run("qemu-io", "-c", "write -P 0x55 100k 300k", "-c", "write -z 1M 128k", plain)
    base = tmp_path / "base.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", plain, base)
    run("qemu-img", "snapshot", "-c", "snap1", base)
    run("qemu-io", "-c", "write -P 0x77 2M 64k", base)  # after the snapshot: COW in QEMU
    top = tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
    run("qemu-io", "-c", "write -P 0x66 1500k 70k", "-c", "write -z 0 4k", top)
    expect = bytearray(data)
    expect[100 * 1024 : 400 * 1024] = b"\x55" * (300 * 1024)
    expect[MiB : MiB + 128 * 1024] = bytes(128 * 1024)
    expect[2 * MiB : 2 * MiB + 65536] = b"\x77" * 65536
    expect[1500 * 1024 : 1570 * 1024] = b"\x66" * (70 * 1024)
    expect[0:4096] = bytes(4096)
    return base, top, bytes(expect)


def test_reads_qemu_chain_with_compressed_clusters(tmp_path: Path) -> None:
    base, top, expect = qemu_chain(tmp_path)
    out = tmp_path / "out.raw"
    run("qemuser-img", "convert", "-O", "raw", top, out)
    assert out.read_bytes() == expect
    run(
        "qemuser-io",
        "-c",
        "read -P 0x66 1500k 70k",
        "-c",
        "read -P 0x77 2M 64k",
        "-c",
        "read -P 0 1M 128k",
        top,
    )
    # the snapshot's view, as QEMU left it: pattern 0x77 is not in it
    run("qemuser-img", "convert", "-O", "qcow2", top, tmp_path / "flat.qcow2")
    qemu_check(tmp_path / "flat.qcow2")
    assert run("qemu-img", "compare", top, tmp_path / "flat.qcow2").returncode == 0


def test_same_output_as_qemu_img(tmp_path: Path) -> None:
    base, top, _ = qemu_chain(tmp_path)
    for args in (
        ["info", "top.qcow2"],
        ["info", "--output=json", "top.qcow2"],
        ["info", "--backing-chain", "top.qcow2"],
        ["info", "--output=json", "--backing-chain", "top.qcow2"],
        ["map", "top.qcow2"],
        ["map", "--output=json", "top.qcow2"],
        ["map", "--output=json", "src.raw"],
        ["check", "base.qcow2"],
        ["check", "--output=json", "base.qcow2"],
        ["snapshot", "-l", "base.qcow2"],
        ["measure", "-O", "qcow2", "top.qcow2"],
        ["measure", "--output=json", "-O", "qcow2", "base.qcow2"],
        ["measure", "--size", "1G", "-O", "qcow2"],
        ["compare", "top.qcow2", "base.qcow2"],
        ["compare", "-s", "base.qcow2", "base.qcow2"],
    ):
        same_output(tmp_path, *args)


def test_overlay_writes_leave_backing_untouched(tmp_path: Path) -> None:
    base, top, expect = qemu_chain(tmp_path)
    before = digest(base)
    run(
        "qemuser-io",
        "-c",
        "write -P 0x99 3000 200k",
        "-c",
        "write -z 2M 64k",
        "-c",
        "discard 2560k 64k",
        top,
    )
    assert digest(base) == before
    qemu_check(top)
    run(
        "qemu-io",
        "-c",
        "read -P 0x99 3000 200k",
        "-c",
        "read -P 0 2M 64k",
        "-c",
        "read -P 0 2560k 64k",
        top,
    )
    p = run("qemu-img", "compare", base, top, check=False)
    assert p.returncode == 1 and p.stdout.startswith("Content mismatch at offset")
    run("qemu-img", "convert", "-O", "raw", top, tmp_path / "q.raw")
    run("qemuser-img", "convert", "-O", "raw", top, tmp_path / "o.raw")
    assert digest(tmp_path / "q.raw") == digest(tmp_path / "o.raw")


def test_snapshots_made_by_us_and_by_qemu(tmp_path: Path) -> None:
    img = tmp_path / "s.qcow2"
    run("qemuser-img", "create", "-q", "-f", "qcow2", img, "2M")
    run("qemuser-io", "-c", "write -P 1 0 1M", img)
    run("qemuser-img", "snapshot", "-c", "one", img)
    run("qemuser-io", "-c", "write -P 2 64k 64k", "-c", "write -P 3 1M 64k", img)
    qemu_check(img)
    listing = run("qemu-img", "snapshot", "-l", img).stdout.splitlines()
    assert listing[0] == "Snapshot list:"
    assert re.match(r"1 +one +0 B \d{4}-\d\d-\d\d \d\d:\d\d:\d\d 00:00:00.000 +0$", listing[2])
    run("qemu-io", "-c", "read -P 2 64k 64k", img)
    # QEMU takes a second one on top; we apply the first and delete the second
    run("qemu-img", "snapshot", "-c", "two", img)
    run("qemuser-img", "snapshot", "-a", "one", img)
    qemu_check(img)
    run("qemu-io", "-c", "read -P 1 0 1M", "-c", "read -P 0 1M 64k", img)
    run("qemuser-img", "snapshot", "-d", "two", img)
    qemu_check(img)
    run("qemu-img", "snapshot", "-a", "one", img)
    run("qemuser-img", "snapshot", "-d", "1", img)
    assert run("qemu-img", "snapshot", "-l", img).stdout == ""
    out = qemu_check(img)
    assert "16/32 = 50.00% allocated" in out
    p = run("qemuser-img", "snapshot", "-a", "nosuch", img, check=False)
    assert (p.returncode, p.stderr) == (
        1,
        "qemuser-img: Could not apply snapshot 'nosuch': Failed to load snapshot: No such "
        "file or directory\n",
    )


def test_convert_compressed_and_back(tmp_path: Path) -> None:
    raw = tmp_path / "a.raw"
    raw.write_bytes(os.urandom(MiB) + bytes(MiB) + b"abc" * (MiB // 3) + b"x")
    comp = tmp_path / "c.qcow2"
    run("qemuser-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, comp)
    out = qemu_check(comp)
    assert re.search(r"\d+\.\d\d% compressed clusters", out)
    assert not re.search(r" 0\.00% compressed", out)
    assert run("qemu-img", "compare", "-f", "raw", raw, comp).returncode == 0
    # and one made by qemu-img -c, read by us
    qcomp = tmp_path / "q.qcow2"
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, qcomp)
    back = tmp_path / "back.raw"
    run("qemuser-img", "convert", "-O", "raw", qcomp, back)
    assert back.read_bytes() == raw.read_bytes()
    # -p prints QEMU's progress lines
    p = subprocess.run(
        [VENV_BIN / "qemuser-img", "convert", "-p", "-O", "qcow2", qcomp, tmp_path / "p.qcow2"],
        capture_output=True,
        check=True,
    )
    assert p.stdout.startswith(b"    (0.00/100%)\r")
    assert p.stdout.endswith(b"    (100.00/100%)\r    (100.00/100%)\r\n")


def test_refcount_table_grows(tmp_path: Path) -> None:
    img = tmp_path / "g.qcow2"
    run("qemuser-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "40M")
    run("qemuser-io", "-c", "write -P 0x3c 0 24M", "-c", "write -P 0x3d 39M 1M", img)
    qemu_check(img)
    run("qemu-io", "-c", "read -P 0x3c 0 24M", "-c", "read -P 0x3d 39M 1M", img)


def test_resize(tmp_path: Path) -> None:
    img = tmp_path / "r.qcow2"
    run("qemuser-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", img, "1M")
    run("qemuser-io", "-c", "write -P 7 0 1M", img)
    assert run("qemuser-img", "resize", img, "+100M").stdout == "Image resized.\n"
    qemu_check(img)
    p = run("qemuser-img", "resize", img, "--", "-50M", check=False)
    assert (p.returncode, p.stderr) == (
        1,
        "qemuser-img: Use the --shrink option to perform a shrink operation.\n",
    )
    run("qemuser-img", "resize", "--shrink", img, "512k")
    qemu_check(img)
    assert (
        json.loads(run("qemu-img", "info", "--output=json", img).stdout)["virtual-size"]
        == 512 * 1024
    )
    run("qemu-io", "-c", "read -P 7 0 512k", img)


def test_rebase_commit_amend(tmp_path: Path) -> None:
    base, top, expect = qemu_chain(tmp_path)
    other = tmp_path / "other.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", other, "3M")
    # safe rebase onto an empty image keeps the guest view
    run("qemuser-img", "rebase", "-b", "other.qcow2", "-F", "qcow2", top)
    qemu_check(top)
    info = json.loads(run("qemu-img", "info", "--output=json", top).stdout)
    assert info["backing-filename"] == "other.qcow2"
    run("qemu-img", "convert", "-O", "raw", top, tmp_path / "v.raw")
    assert (tmp_path / "v.raw").read_bytes() == expect
    # commit into the (new) backing file, which then holds everything
    assert run("qemuser-img", "commit", top).stdout == "Image committed.\n"
    qemu_check(other)
    run("qemu-img", "convert", "-O", "raw", other, tmp_path / "w.raw")
    assert (tmp_path / "w.raw").read_bytes() == expect
    # unsafe rebase only rewrites the name
    run("qemuser-img", "rebase", "-u", "-b", "base.qcow2", "-F", "qcow2", top)
    assert (
        json.loads(run("qemu-img", "info", "--output=json", top).stdout)["backing-filename"]
        == "base.qcow2"
    )
    # amend: to compat 0.10 and back
    run("qemuser-img", "amend", "-o", "compat=0.10", other)
    qemu_check(other)
    assert (
        json.loads(run("qemu-img", "info", "--output=json", other).stdout)["format-specific"][
            "data"
        ]["compat"]
        == "0.10"
    )
    run("qemuser-img", "amend", "-o", "compat=1.1,lazy_refcounts=on", other)
    qemu_check(other)
    data = json.loads(run("qemu-img", "info", "--output=json", other).stdout)
    assert data["format-specific"]["data"]["lazy-refcounts"] is True


def test_check_reports_and_repairs_leaks(tmp_path: Path) -> None:
    img = tmp_path / "l.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", img, "1M")
    run("qemu-io", "-c", "write -P 1 0 64k", img)
    run("qemu-img", "snapshot", "-c", "s1", img, check=False)  # QEMU leaks a cluster here
    for args in (["check", "l.qcow2"], ["check", "--output=json", "l.qcow2"]):
        same_output(tmp_path, *args)
    p = run("qemuser-img", "check", img, check=False)
    assert p.returncode == 3
    assert p.stderr == "Leaked cluster 6 refcount=1 reference=0\n"
    p = run("qemuser-img", "check", "-r", "leaks", img)
    assert "    1 leaked clusters\n    0 corruptions\n" in p.stdout
    assert "No errors were found on the image." in p.stdout
    qemu_check(img)


def test_compare_exit_status(tmp_path: Path) -> None:
    a, b = tmp_path / "a.qcow2", tmp_path / "b.raw"
    run("qemuser-img", "create", "-q", "-f", "qcow2", a, "1M")
    run("qemuser-img", "create", "-q", "-f", "raw", b, "2M")
    p = run("qemuser-img", "compare", a, b, check=False)
    assert (p.returncode, p.stdout) == (0, "Warning: Image size mismatch!\nImages are identical.\n")
    p = run("qemuser-img", "compare", "-s", a, b, check=False)
    assert (p.returncode, p.stdout) == (1, "Strict mode: Image size mismatch!\n")
    run("qemuser-io", "-f", "raw", "-c", "write -P 1 1536k 1", b)
    p = run("qemuser-img", "compare", a, b, check=False)
    assert (p.returncode, p.stdout.splitlines()[-1]) == (1, "Content mismatch at offset 1572864!")
    p = run("qemuser-img", "compare", a, tmp_path / "none", check=False)
    assert p.returncode == 2


def test_dirty_image_is_repaired_on_write_open(tmp_path: Path) -> None:
    img = tmp_path / "d.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", img, "1M")
    run("qemu-io", "-c", "write -P 1 0 64k", img)
    run("qemu-img", "snapshot", "-c", "s1", img, check=False)  # leaves a leaked cluster
    raw = bytearray(img.read_bytes())
    raw[72:80] = (1).to_bytes(8, "big")  # the dirty bit: refcounts may be stale
    img.write_bytes(raw)
    assert "cleanly shut down: no" in run("qemuser-img", "info", img).stdout
    run("qemuser-io", "-c", "write -P 2 0 512", img)
    info = run("qemuser-img", "info", "--output=json", img).stdout
    assert '"dirty-flag": false' in info
    qemu_check(img)
    run("qemu-io", "-c", "read -P 2 0 512", "-c", "read -P 1 512 63k", img)
