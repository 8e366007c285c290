"""The image tools' operations (qemu-img's subcommands), over BlockDriver; no printing here."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from qemuser.system.block.driver import BlockDriver
from qemuser.system.block.errors import BlockError
from qemuser.system.block.probe import open_image
from qemuser.system.block.qcow2 import Qcow2Image, _ceil_div, create_qcow2, resolve_backing
from qemuser.system.block.rawimg import RawImage

CHUNK = 4 << 20  # convert/compare/commit move data in runs of this many bytes


@dataclass(frozen=True)
class MapEntry:
    """One run of qemu-img map: who in the chain defines the bytes, and where they are."""

    start: int
    length: int
    depth: int
    present: bool
    zero: bool
    data: bool
    offset: int | None
    filename: str
    compressed: bool = False

    def same_kind(self, other: MapEntry) -> bool:
        if (self.depth, self.present, self.zero, self.data, self.filename) != (
            other.depth,
            other.present,
            other.zero,
            other.data,
            other.filename,
        ):
            return False
        if self.offset is None or other.offset is None:
            return self.offset is None and other.offset is None
        return self.offset + self.length == other.offset


def chain(img: BlockDriver) -> list[BlockDriver]:
    out = [img]
    while out[-1].backing is not None:
        out.append(out[-1].backing)  # type: ignore[arg-type]
    return out


def _layer_map(
    layers: list[BlockDriver], depth: int, start: int, length: int
) -> Iterator[MapEntry]:
    img = layers[depth]
    end = start + length
    pos = start
    size = img.size()
    if pos >= size:  # beyond a shorter backing file: reads as zeroes
        yield MapEntry(pos, end - pos, depth, False, True, False, None, img.filename)
        return
    for ext in img.block_status(pos, min(end, size) - pos):
        if ext.allocated or depth == len(layers) - 1:
            yield MapEntry(
                ext.start,
                ext.length,
                depth,
                ext.allocated,
                ext.zero,
                ext.data,
                ext.host_offset,
                img.filename,
                ext.compressed,
            )
        else:
            yield from _layer_map(layers, depth + 1, ext.start, ext.length)
    if end > size:
        yield MapEntry(size, end - size, depth, False, True, False, None, img.filename)


def chain_map(img: BlockDriver, start: int = 0, length: int | None = None) -> list[MapEntry]:
    """qemu-img map's runs over the whole chain, merged where nothing differs."""
    if length is None:
        length = img.size() - start
    layers = chain(img)
    out: list[MapEntry] = []
    for e in _layer_map(layers, 0, start, length):
        if out and out[-1].same_kind(e) and out[-1].start + out[-1].length == e.start:
            p = out[-1]
            out[-1] = MapEntry(
                p.start,
                p.length + e.length,
                p.depth,
                p.present,
                p.zero,
                p.data,
                p.offset,
                p.filename,
                p.compressed,
            )
        else:
            out.append(e)
    return out


# -- create -----------------------------------------------------------------------------------


@dataclass
class CreateOptions:
    fmt: str
    size: int | None
    cluster_size: int = 65536
    compat: str = "1.1"
    backing_file: str = ""
    backing_fmt: str = ""
    preallocation: str = "off"
    lazy_refcounts: bool = False
    refcount_bits: int = 16


def create(filename: str, opts: CreateOptions) -> None:
    if opts.preallocation not in ("off", "metadata", "falloc", "full"):
        raise BlockError(f"Invalid parameter '{opts.preallocation}'", errno=22)
    size = opts.size
    if opts.backing_file:
        backing_path = resolve_backing(filename, opts.backing_file)
        try:
            bimg = open_image(backing_path, opts.backing_fmt or None, True, warn=False)
        except BlockError as e:
            raise BlockError(f"Could not open backing image: {e}", e.errno) from None
        with bimg:
            if size is None:
                size = bimg.size()
    if size is None:
        raise BlockError("Image creation needs a size parameter", errno=22)
    if opts.fmt == "raw":
        if opts.backing_file:
            raise BlockError("'raw' does not support backing files", errno=95)
        try:
            fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise BlockError(
                f"Could not create '{filename}': {os.strerror(e.errno)}", e.errno
            ) from None
        try:
            os.ftruncate(fd, size)
            if opts.preallocation == "falloc":
                os.posix_fallocate(fd, 0, size) if size else None
            elif opts.preallocation == "full":
                for p in range(0, size, CHUNK):
                    os.pwrite(fd, bytes(min(CHUNK, size - p)), p)
            elif opts.preallocation == "metadata":
                raise BlockError("Unsupported preallocation mode 'metadata'", errno=95)
        finally:
            os.close(fd)
        return
    if opts.compat not in ("0.10", "1.1", "v2", "v3"):
        raise BlockError(f"Invalid parameter '{opts.compat}'", errno=22)
    if opts.preallocation != "off" and opts.backing_file:
        raise BlockError(
            "Backing file and preallocation can only be used at the same time if extended_l2 is on",
            errno=22,
        )
    create_qcow2(
        filename,
        size,
        cluster_size=opts.cluster_size,
        version=2 if opts.compat in ("0.10", "v2") else 3,
        backing_file=opts.backing_file,
        backing_format=opts.backing_fmt,
        preallocation=opts.preallocation,
        lazy_refcounts=opts.lazy_refcounts,
        refcount_bits=opts.refcount_bits,
    )


# -- measure ----------------------------------------------------------------------------------


def refcount_metadata_size(clusters: int, cs: int, refcount_order: int) -> int:
    """Bytes of refcount table and blocks to describe `clusters` clusters and themselves."""
    per_table_cluster = cs // 8
    per_block = cs * 8 // (1 << refcount_order)
    table = blocks = 0
    n = 0
    while True:
        last = n
        blocks = _ceil_div(clusters + table + blocks, per_block)
        table = _ceil_div(blocks, per_table_cluster)
        n = clusters + blocks + table
        if n == last:
            return (blocks + table) * cs


def qcow2_prealloc_size(total: int, cs: int, refcount_order: int) -> int:
    """The file size of a fully allocated qcow2 image (QEMU's qcow2_calc_prealloc_size)."""
    aligned = _ceil_div(total, cs) * cs
    meta = cs
    nl2e = aligned // cs
    nl2e = _ceil_div(nl2e, cs // 8) * (cs // 8)
    meta += nl2e * 8
    nl1e = nl2e * 8 // cs
    nl1e = _ceil_div(nl1e, cs // 8) * (cs // 8)
    meta += nl1e * 8
    meta += refcount_metadata_size((meta + aligned) // cs, cs, refcount_order)
    return meta + aligned


def measure(
    source: BlockDriver | None, size: int | None, out_fmt: str, opts: CreateOptions
) -> tuple[int, int]:
    """(required, fully allocated) bytes for converting `source` (or a new image of `size`)."""
    virtual = source.size() if source is not None else (size or 0)
    if out_fmt == "raw":
        return virtual, virtual
    cs = opts.cluster_size
    required = 0
    if source is not None:
        # the clusters holding data (zero runs need none: there is no backing file)
        seen: set[int] = set()
        for e in chain_map(source):
            if e.zero or not (e.data and e.present):
                continue
            seen.update(range(e.start // cs, _ceil_div(e.start + e.length, cs)))
        required = len(seen) * cs
    if opts.preallocation in ("full", "falloc"):
        required = virtual
    full = qcow2_prealloc_size(virtual, cs, opts.refcount_bits.bit_length() - 1)
    return full - _ceil_div(virtual, cs) * cs + required, full


# -- convert ----------------------------------------------------------------------------------


def _is_zero(buf: bytes | memoryview) -> bool:
    return not buf[0] and not buf[-1] and buf == bytes(len(buf))


def convert(
    sources: list[BlockDriver],
    target: BlockDriver,
    *,
    compress: bool = False,
    progress: Callable[[float], None] | None = None,
    skip_unallocated_target: bool = True,
    flush: bool = False,
) -> None:
    """Copy the concatenated sources into target; zero runs stay holes in a fresh target.

    A reader thread reads ahead while this one writes (os.pread and os.pwrite release the GIL,
    so the two overlap as QEMU's parallel requests do). No flush by default: qemu-img
    convert's default cache mode is 'unsafe'.
    """
    total = max(sum(s.size() for s in sources), 1)
    cs = target.cluster_size() or 4096  # raw: qemu-img convert -S 4k
    tbacking = target.backing
    whole_clusters = compress and isinstance(target, Qcow2Image)

    def jobs() -> Iterator[tuple[int, int, Callable[[], bytes] | None]]:
        base = 0
        for src in sources:
            for e in chain_map(src):
                if (e.zero or not e.present) and tbacking is None and skip_unallocated_target:
                    yield base + e.start, e.length, None  # nothing to write
                    continue
                pos, end = base + e.start, base + e.start + e.length
                if whole_clusters:  # compressed clusters are written whole
                    pos = pos // cs * cs
                    end = min(_ceil_div(end, cs) * cs, target.size())
                while pos < end:
                    n = min(CHUNK, end - pos)
                    if whole_clusters:
                        yield pos, n, (lambda p=pos, k=n: _read_concat(sources, p, k))
                    else:
                        yield pos, n, (lambda s=src, p=pos - base, k=n: s.read(p, k))
                    pos += n
            base += src.size()

    ahead: queue.Queue[tuple[int, int, bytes | None] | BaseException | None] = queue.Queue(4)
    stop = threading.Event()

    def reader() -> None:
        try:
            for pos, n, read in jobs():
                if stop.is_set():
                    return
                ahead.put((pos, n, read() if read is not None else None))
            ahead.put(None)
        except BaseException as e:  # handed over to the writing thread
            ahead.put(e)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    done = 0
    try:
        while True:
            item = ahead.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            pos, n, data = item
            if data is not None:
                _write_chunk(target, pos, data, compress, tbacking, skip_unallocated_target)
            done += n
            if progress:
                progress(100.0 * min(done, total) / total)
    finally:
        stop.set()
        while thread.is_alive():
            try:
                ahead.get_nowait()
            except queue.Empty:
                thread.join(0.01)
    if flush:
        target.flush()


def _read_concat(sources: list[BlockDriver], offset: int, length: int) -> bytes:
    out = []
    base = 0
    for s in sources:
        size = s.size()
        if offset < base + size and offset + length > base:
            a = max(offset, base)
            b = min(offset + length, base + size)
            out.append(s.read(a - base, b - a))
        base += size
    data = b"".join(out)
    return data + bytes(length - len(data))


def _write_chunk(
    target: BlockDriver,
    offset: int,
    data: bytes,
    compress: bool,
    tbacking: BlockDriver | None,
    fresh: bool = True,
) -> None:
    cs = target.cluster_size() or 4096  # raw: qemu-img convert -S 4k
    view = memoryview(data)
    if tbacking is not None:
        # -B: store only what differs from the new backing file
        p = 0
        while p < len(data):
            n = min(cs - (offset + p) % cs, len(data) - p)
            chunk = view[p : p + n]
            below = tbacking.read(offset + p, n) if offset + p + n <= tbacking.size() else None
            if below is None or below != chunk:
                target.write(offset + p, chunk)
            p += n
        return
    if compress and isinstance(target, Qcow2Image):
        keep = []
        for p in range(0, len(data), cs):
            if not _is_zero(view[p : p + cs]):
                keep.append(p)
        # contiguous runs of non-zero clusters, each compressed in one batch
        i = 0
        while i < len(keep):
            j = i
            while j + 1 < len(keep) and keep[j + 1] == keep[j] + cs:
                j += 1
            a, b = keep[i], min(keep[j] + cs, len(data))
            target.write_compressed(offset + a, view[a:b])
            i = j + 1
        return
    # all-zero clusters are skipped in a fresh target (-n: made zero), the rest written in
    # contiguous runs
    head = -offset % cs  # a first, partial cluster
    if head == 0 and len(data) % cs == 0:
        # clusters whose first or last byte is set are data: two C-level slices tell most of
        # them apart without a Python step per cluster
        firsts, lasts = data[::cs], data[cs - 1 :: cs]
        if all(firsts[i] or lasts[i] for i in range(len(firsts))):
            target.write(offset, data)
            return
    p = 0
    start = None
    zeros = None
    while p < len(data):
        n = min(cs - (offset + p) % cs, len(data) - p)
        if _is_zero(view[p : p + n]):
            if start is not None:
                target.write(offset + start, view[start:p])
                start = None
            if not fresh and zeros is None:
                zeros = p
        else:
            if zeros is not None:
                target.write_zeroes(offset + zeros, p - zeros)
                zeros = None
            if start is None:
                start = p
        p += n
    if start is not None:
        target.write(offset + start, view[start:])
    if zeros is not None:
        target.write_zeroes(offset + zeros, len(data) - zeros)


# -- compare ----------------------------------------------------------------------------------


def _status(e: MapEntry) -> tuple[bool, bool, bool, bool]:
    return (e.data, e.zero, e.offset is not None, e.present)


def compare(a: BlockDriver, b: BlockDriver, strict: bool) -> tuple[int, str]:
    """(exit status, message) of qemu-img compare."""
    sa, sb = a.size(), b.size()
    if strict and sa != sb:
        return 1, "Strict mode: Image size mismatch!"
    common = min(sa, sb)
    ma = chain_map(a, 0, common)
    mb = chain_map(b, 0, common)
    i = j = 0
    pos = 0
    while pos < common:
        ea, eb = ma[i], mb[j]
        end = min(ea.start + ea.length, eb.start + eb.length)
        if strict and _status(ea) != _status(eb):
            return 1, f"Strict mode: Offset {pos} block status mismatch!"
        if not (ea.zero and eb.zero):
            p = pos
            while p < end:
                n = min(CHUNK, end - p)
                da = a.read(p, n) if not ea.zero else bytes(n)
                db = b.read(p, n) if not eb.zero else bytes(n)
                if da != db:
                    k = next(x for x in range(n) if da[x] != db[x])
                    return 1, f"Content mismatch at offset {(p + k) // 512 * 512}!"
                p += n
        pos = end
        if ea.start + ea.length == end:
            i += 1
        if eb.start + eb.length == end:
            j += 1
    if sa != sb:
        big = a if sa > sb else b
        for e in chain_map(big, common, max(sa, sb) - common):
            if e.zero:
                continue
            p = e.start
            while p < e.start + e.length:
                n = min(CHUNK, e.start + e.length - p)
                d = big.read(p, n)
                if d != bytes(n):
                    k = next(x for x in range(n) if d[x])
                    return 1, f"Content mismatch at offset {(p + k) // 512 * 512}!"
                p += n
    return 0, "Images are identical."


# -- commit, rebase ---------------------------------------------------------------------------


def commit(
    top: BlockDriver,
    base: BlockDriver,
    drop: bool = True,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Write what top's layers above base define into base; then empty top (unless not drop)."""
    layers = chain(top)
    if base not in layers[1:]:
        raise BlockError("Base image is not in the backing chain", errno=22)
    depth_base = layers.index(base)
    size = top.size()
    if base.size() < size:
        base.truncate(size)
    entries = chain_map(top)
    total = sum(e.length for e in entries) or 1
    done = 0
    for e in entries:
        if e.depth < depth_base and e.present:
            p = e.start
            while p < e.start + e.length:
                n = min(CHUNK, e.start + e.length - p)
                if e.zero:
                    base.write_zeroes(p, n)
                else:
                    base.write(p, top.read(p, n))
                p += n
        done += e.length
        if progress:
            progress(100.0 * done / total)
    base.flush()
    if drop and isinstance(top, Qcow2Image) and not top.snapshots:
        top.make_empty()
    top.flush()


def rebase(
    img: Qcow2Image,
    new_backing: str,
    new_fmt: str,
    unsafe: bool,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Change img's backing file; in safe mode first copy in what differs between old and new."""
    if not unsafe:
        new: BlockDriver | None = None
        if new_backing:
            path = resolve_backing(img.filename, new_backing)
            try:
                new = open_image(path, new_fmt or None, True, warn=False)
            except BlockError as e:
                raise BlockError(
                    f"Could not open new backing file '{path}': {e}", e.errno
                ) from None
        try:
            old = img.backing
            size = img.size()
            cs = img.cs
            entries = [e for e in img.block_status(0, size) if not e.allocated]
            total = sum(e.length for e in entries) or 1
            done = 0
            for e in entries:
                p = e.start
                while p < e.start + e.length:
                    n = min(CHUNK, e.start + e.length - p)
                    was = _read_below(old, p, n)
                    now = _read_below(new, p, n)
                    if was != now:
                        # cluster by cluster, so that equal clusters stay unallocated
                        for q in range(0, n, cs):
                            m = min(cs, n - q)
                            if was[q : q + m] != now[q : q + m]:
                                img.write(p + q, was[q : q + m])
                    p += n
                    done += n
                    if progress:
                        progress(100.0 * done / total)
        finally:
            if new is not None:
                new.close()
    img.rewrite_header(backing_file=new_backing, backing_format=new_fmt if new_backing else "")


def _read_below(img: BlockDriver | None, pos: int, n: int) -> bytes:
    if img is None or pos >= img.size():
        return bytes(n)
    take = min(n, img.size() - pos)
    data = img.read(pos, take)
    return data + bytes(n - take)


def is_raw(img: BlockDriver) -> bool:
    return isinstance(img, RawImage)
