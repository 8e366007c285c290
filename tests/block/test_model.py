"""The qcow2 driver against a bytearray model: random writes, zeroes, discards and snapshots."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from qemuser.system.block import open_image, qcow2
from qemuser.system.block.qcow2 import Qcow2Image, create_qcow2
from tests.block.conftest import qemu_check, run


@pytest.mark.parametrize(
    "seed,cluster_size,refcount_bits,version",
    [(1, 65536, 16, 3), (2, 512, 16, 3), (3, 4096, 4, 3), (4, 1024, 16, 2), (5, 2048, 64, 3)],
)
def test_random_operations(
    tmp_path: Path,
    seed: int,
    cluster_size: int,
    refcount_bits: int,
    version: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if cluster_size <= 1024:
        # many L2 tables and a one-table cache: trimming between requests is exercised
        monkeypatch.setattr(qcow2, "L2_CACHE_TABLES", 1)
    rng = random.Random(seed)
    size = 64 * cluster_size + 512 * rng.randrange(1, 8)
    backing_data = bytes(rng.randrange(256) for _ in range(64)) * (size // 64 + 1)
    backing_data = backing_data[:size]
    base = tmp_path / "base.raw"
    base.write_bytes(backing_data)
    path = tmp_path / "img.qcow2"
    with_backing = seed % 2 == 1
    create_qcow2(
        str(path),
        size,
        cluster_size=cluster_size,
        refcount_bits=refcount_bits,
        version=version,
        backing_file="base.raw" if with_backing else "",
        backing_format="raw" if with_backing else "",
    )
    model = bytearray(backing_data if with_backing else bytes(size))
    snapshots: dict[str, bytes] = {}
    img = open_image(str(path), "qcow2", read_only=False)
    assert isinstance(img, Qcow2Image)
    try:
        for step in range(150):
            op = rng.random()
            off = rng.randrange(size)
            n = min(rng.choice([1, 511, cluster_size, 3 * cluster_size + 7, 9000]), size - off)
            if op < 0.45:
                data = bytes([rng.randrange(1, 256)]) * n
                img.write(off, data)
                model[off : off + n] = data
            elif op < 0.6:
                img.write_zeroes(off, n, unmap=rng.random() < 0.5)
                model[off : off + n] = bytes(n)
            elif op < 0.68:
                # discarded whole clusters read as zeroes (v3) or as the backing file (v2)
                img.discard(off, n)
                a = -(-off // cluster_size) * cluster_size
                b = (off + n) // cluster_size * cluster_size if off + n < size else size
                if a < b:
                    model[a:b] = (
                        backing_data[a:b] if (version < 3 and with_backing) else bytes(b - a)
                    )
            elif op < 0.74 and (refcount_bits > 4 or len(snapshots) < 1):
                name = f"s{step}"
                img.snapshot_create(name)
                snapshots[name] = bytes(model)
            elif op < 0.8 and snapshots:
                name = rng.choice(sorted(snapshots))
                img.snapshot_apply(name)
                model[:] = snapshots[name]
            elif op < 0.84 and snapshots:
                name = rng.choice(sorted(snapshots))
                img.snapshot_delete(name)
                del snapshots[name]
            elif op < 0.87:
                img.write_compressed(0, bytes(model[:cluster_size]))
            else:
                assert img.read(off, n) == model[off : off + n], step
        assert img.read(0, size) == model
        res = img.check()
        assert (res.corruptions, res.leaks) == (0, 0), res.messages
    finally:
        img.close()
    qemu_check(path)
    out = tmp_path / "out.raw"
    run("qemu-img", "convert", "-O", "raw", path, out)
    assert out.read_bytes() == model
