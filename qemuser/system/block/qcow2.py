"""The qcow2 format (versions 2 and 3), read and write.

Layout (docs/interop/qcow2.txt): a header in cluster 0, a two-level map from guest clusters to
host clusters (the L1 table points to L2 tables, whose entries point to data clusters, possibly
compressed or marked as reading zeroes), and a two-level table of reference counts (refcount
table -> refcount blocks) that says which host clusters are in use and by how many maps. Internal
snapshots are copies of the L1 table; the clusters they share with the active map have refcounts
above 1 and lose the COPIED flag, so a write to them allocates a new cluster first.

Crash safety comes from the order of the writes, the one QEMU uses: a cluster's refcount is
raised before anything points to it, data is written before the L2 entry that maps it, the header
switches to a new table only once the table is complete, and refcounts are dropped last. An
interrupted operation can leak clusters (qemu-img check -r leaks repairs that) but never leaves a
map pointing to a free cluster.

Metadata is validated as it is loaded; a bad offset or size is a BlockError, and the image is
never written before it was validated (the CLI opens read-only unless it writes).
"""

from __future__ import annotations

import concurrent.futures
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Protocol

from qemuser.system.block.driver import BlockDriver, Extent
from qemuser.system.block.errors import BlockError
from qemuser.system.block.rawimg import host_length, open_file

MAGIC = b"QFI\xfb"
HEADER_V2 = struct.Struct(">4sIQIIQIIQQIIQ")  # 72 bytes
HEADER_V3 = struct.Struct(">QQQII")  # the 32 bytes v3 adds, up to offset 104
V3_HEADER_LENGTH = 112  # with the compression type byte, padded to 8, as QEMU writes it

OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00
REFT_OFFSET_MASK = 0xFFFF_FFFF_FFFF_FE00
COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1

MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
MAX_L1_SIZE = 32 * 1024 * 1024  # bytes, QEMU's QCOW_MAX_L1_SIZE
MAX_REFTABLE_SIZE = 8 * 1024 * 1024  # bytes, QCOW_MAX_REFTABLE_SIZE
MAX_SNAPSHOTS = 65536
L2_CACHE_TABLES = 1024  # L2 tables kept between requests (64 GiB of guest at 64 KiB clusters)

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_SUPPORTED = INCOMPAT_DIRTY | INCOMPAT_CORRUPT
COMPAT_LAZY_REFCOUNTS = 1 << 0

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857

# The feature name table QEMU writes into every v3 image (type, bit, name).
FEATURE_NAMES = (
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
)

# Kinds of a guest cluster in the active map.
UNALLOCATED = 0
NORMAL = 1
ZERO_PLAIN = 2
ZERO_ALLOC = 3
COMPRESSED_KIND = 4


@dataclass
class Snapshot:
    """One entry of the snapshot table."""

    l1_offset: int
    l1_size: int
    id: str
    name: str
    date_sec: int = 0
    date_nsec: int = 0
    vm_clock_nsec: int = 0
    vm_state_size: int = 0
    disk_size: int | None = None
    icount: int | None = None
    extra: bytes = b""  # extra data beyond the fields we know, kept verbatim

    def encode(self) -> bytes:
        icount = self.icount if self.icount is not None else 2**64 - 1
        extra = struct.pack(">QQQ", self.vm_state_size, self.disk_size or 0, icount) + self.extra
        ident = self.id.encode()
        name = self.name.encode()
        head = struct.pack(
            ">QIHHIIQII",
            self.l1_offset,
            self.l1_size,
            len(ident),
            len(name),
            self.date_sec,
            self.date_nsec,
            self.vm_clock_nsec,
            min(self.vm_state_size, 0xFFFFFFFF),
            len(extra),
        )
        entry = head + extra + ident + name
        return entry + bytes(-len(entry) % 8)


@dataclass
class CheckResult:
    """What `check` found (and repaired), with QEMU's messages in order."""

    corruptions: int = 0
    leaks: int = 0
    check_errors: int = 0
    corruptions_fixed: int = 0
    leaks_fixed: int = 0
    allocated_clusters: int = 0
    total_clusters: int = 0
    fragmented_clusters: int = 0
    compressed_clusters: int = 0
    image_end_offset: int = 0
    messages: list[str] = field(default_factory=list)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def _compressor() -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    return _POOL


def resolve_backing(overlay: str, backing: str) -> str:
    """A relative backing file name is relative to the overlay's directory."""
    if os.path.isabs(backing) or ":" in backing.split("/")[0]:
        return backing
    return os.path.join(os.path.dirname(overlay), backing)


class BackingOpener(Protocol):
    def __call__(
        self,
        filename: str,
        fmt: str | None,
        read_only: bool,
        *,
        chain: frozenset[str],
        warn: bool,
    ) -> BlockDriver: ...


class Qcow2Image(BlockDriver):
    """An open qcow2 image. Open read-only unless you write; `open_backing` opens the chain."""

    format_name = "qcow2"

    def __init__(
        self,
        filename: str,
        read_only: bool = True,
        open_backing: bool = True,
        chain: frozenset[str] = frozenset(),
        opener: BackingOpener | None = None,
    ) -> None:
        super().__init__(filename, read_only)
        # How a backing file is opened (probe.open_image: any format, probed as QEMU does);
        # passed in, so that this module needs no import of the prober that imports it.
        self._opener = opener
        self.fd = open_file(filename, read_only)
        try:
            self._open(open_backing, chain)
        except BaseException:
            self.close()
            raise

    # -- opening and validation -----------------------------------------------------------

    def _fail(self, message: str) -> None:
        raise BlockError(message, errno=22)

    def _open(self, open_backing: bool, chain: frozenset[str]) -> None:
        self.file_size = host_length(self.fd)
        head = os.pread(self.fd, HEADER_V2.size, 0)
        if len(head) < HEADER_V2.size or head[:4] != MAGIC:
            if head[:4] == MAGIC:
                self._fail("qcow2 header is truncated")
            self._fail("Image is not in qcow2 format")
        (
            _,
            self.version,
            self.backing_file_offset,
            self.backing_file_size,
            self.cluster_bits,
            self._size,
            self.crypt_method,
            self.l1_size,
            self.l1_offset,
            self.rt_offset,
            self.rt_clusters,
            nb_snapshots,
            snapshots_offset,
        ) = HEADER_V2.unpack(head)
        if self.version not in (2, 3):
            raise BlockError(f"Unsupported qcow2 version {self.version}", errno=95)
        if not MIN_CLUSTER_BITS <= self.cluster_bits <= MAX_CLUSTER_BITS:
            self._fail(f"Unsupported cluster size: 2^{self.cluster_bits}")
        cs = self.cs = 1 << self.cluster_bits
        if self.file_size < HEADER_V2.size:
            self._fail("qcow2 header is truncated")
        self.incompatible = self.compatible = self.autoclear = 0
        self.refcount_order = 4
        self.header_length = HEADER_V2.size
        self.compression_type = 0
        if self.version == 3:
            more = os.pread(self.fd, HEADER_V3.size + 8, HEADER_V2.size)
            if len(more) < HEADER_V3.size:
                self._fail("qcow2 header is truncated")
            (
                self.incompatible,
                self.compatible,
                self.autoclear,
                self.refcount_order,
                self.header_length,
            ) = HEADER_V3.unpack(more[: HEADER_V3.size])
            if self.header_length < 104:
                self._fail("qcow2 header too short")
            if self.header_length > cs:
                self._fail("qcow2 header exceeds cluster size")
            if self.header_length > 104:
                self.compression_type = more[HEADER_V3.size]
        header_cluster = os.pread(self.fd, cs, 0)
        self._parse_extensions(header_cluster)
        if self.incompatible & ~INCOMPAT_SUPPORTED or self.compression_type != 0:
            bad = self.incompatible & ~INCOMPAT_SUPPORTED
            names = []
            for bit in range(64):
                if bad & (1 << bit):
                    name = self.feature_names.get((0, bit))
                    names.append(name if name else f"Unknown incompatible feature: {1 << bit:x}")
            if self.compression_type != 0 and not names:
                names.append("compression type")
            raise BlockError("Unsupported qcow2 feature(s): " + ", ".join(names), errno=95)
        if self.incompatible & INCOMPAT_CORRUPT and not self.read_only:
            raise BlockError("qcow2: Image is corrupt; cannot be opened read/write", errno=5)
        if self.crypt_method:
            raise BlockError(f"Unsupported encryption method: {self.crypt_method}", errno=95)
        if self.refcount_order > 6:
            self._fail("Reference count entry width too large; may not exceed 64 bits")
        if self.version == 2 and self.refcount_order != 4:
            self._fail("Unsupported refcount order for compat=0.10")
        self.rc_bits = 1 << self.refcount_order
        self.rc_max = (1 << self.rc_bits) - 1
        self.rb_entries = cs * 8 // self.rc_bits
        self.l2_entries = cs // 8
        self.l2_bits = self.cluster_bits - 3
        self.csize_shift = 62 - (self.cluster_bits - 8)
        self.csize_mask = (1 << (self.cluster_bits - 8)) - 1
        self.coffset_mask = (1 << self.csize_shift) - 1

        # the backing file's name
        self.backing_filename = ""
        if self.backing_file_offset:
            if self.backing_file_size > 1023 or self.backing_file_size > cs:
                self._fail("Backing file name too long")
            if self.backing_file_offset + self.backing_file_size > cs:
                self._fail("Invalid backing file offset")
            raw = header_cluster[
                self.backing_file_offset : self.backing_file_offset + self.backing_file_size
            ]
            self.backing_filename = raw.decode("utf-8", "replace")

        # the refcount table
        if self.rt_clusters * cs > MAX_REFTABLE_SIZE:
            self._fail("Reference count table too large")
        self._check_table(self.rt_offset, self.rt_clusters * cs, "Reference count table")
        if self.rt_clusters == 0:
            self._fail("Reference count table offset invalid")
        raw = os.pread(self.fd, self.rt_clusters * cs, self.rt_offset)
        self.rt = list(struct.unpack(f">{len(raw) // 8}Q", raw))
        for i, e in enumerate(self.rt):
            off = e & REFT_OFFSET_MASK
            if off and (off & (cs - 1) or off + cs > self._file_limit()):
                self._fail(
                    f"Refblock offset {off:#x} of refcount table entry {i} is "
                    + ("unaligned" if off & (cs - 1) else "beyond the end of the image file")
                )

        # the active L1 table
        if self.l1_size > MAX_L1_SIZE // 8:
            self._fail("Active L1 table too large")
        needed = _ceil_div(self._size, cs * self.l2_entries)
        if self.l1_size < needed:
            self._fail("L1 table is too small")
        if self.l1_size:
            self._check_table(self.l1_offset, self.l1_size * 8, "Active L1 table")
        raw = os.pread(self.fd, self.l1_size * 8, self.l1_offset) if self.l1_size else b""
        self.l1 = list(struct.unpack(f">{self.l1_size}Q", raw))

        # the snapshot table
        if nb_snapshots > MAX_SNAPSHOTS:
            self._fail("Too many snapshots")
        self.snapshots_offset = snapshots_offset
        self.snapshots: list[Snapshot] = []
        if nb_snapshots:
            self._check_table(snapshots_offset, nb_snapshots * 40, "Snapshot table")
            self.snapshots = self._read_snapshots(snapshots_offset, nb_snapshots)
        self.snapshot_table_size = sum(len(s.encode()) for s in self.snapshots)

        self._l2_cache: dict[int, list[int]] = {}
        self._rb_cache: dict[int, list[int]] = {}
        self._cluster_cache: tuple[int, bytes] | None = None
        self._next_free = _ceil_div(max(self.file_size, 1), cs)
        last = self._last_used_cluster()
        self._next_free = max(self._next_free, last + 1)
        self._free_hint = 0
        self._compress_pos = 0  # byte offset where the next compressed cluster may go

        if not self.read_only:
            if self.incompatible & INCOMPAT_DIRTY:
                # refcounts may be stale (lazy refcounts): rebuild them, then mark clean
                self.check(repair="all")
                self._set_incompatible(self.incompatible & ~INCOMPAT_DIRTY)
            if self.autoclear:
                # we keep no bitmaps: clearing the autoclear bits says their data is stale
                self.autoclear = 0
                os.pwrite(self.fd, struct.pack(">Q", 0), 88)

        if open_backing and self.backing_filename:
            self._open_backing(chain)

    def _open_backing(self, chain: frozenset[str]) -> None:
        if self._opener is None:
            self._fail("backing file given, but no way to open it")
        path = resolve_backing(self.filename, self.backing_filename)
        me = os.path.realpath(self.filename)
        if os.path.realpath(path) in chain | {me}:
            self._fail(f"Backing file '{path}' is part of its own chain")
        try:
            self.backing = self._opener(
                path, self.backing_format or None, True, chain=chain | {me}, warn=False
            )
        except BlockError as e:
            raise BlockError(f"Could not open backing file: {e}", e.errno) from None

    def _file_limit(self) -> int:
        return max(self.file_size, self._next_free * self.cs if hasattr(self, "_next_free") else 0)

    def _check_table(self, offset: int, size: int, what: str) -> None:
        if offset & (self.cs - 1) or offset + size > self._file_limit() or offset == 0:
            self._fail(f"{what} offset invalid")

    def _parse_extensions(self, header: bytes) -> None:
        self.backing_format = ""
        self.feature_names: dict[tuple[int, int], str] = {}
        self.unknown_extensions: list[tuple[int, bytes]] = []
        pos = self.header_length
        end = self.backing_file_offset if self.backing_file_offset else self.cs
        while pos + 8 <= min(end, self.cs):
            kind, length = struct.unpack_from(">II", header, pos)
            pos += 8
            if kind == EXT_END:
                break
            if pos + length > self.cs:
                self._fail("Invalid header extension (its length overflows the header cluster)")
            data = header[pos : pos + length]
            if kind == EXT_BACKING_FORMAT:
                self.backing_format = data.decode("utf-8", "replace")
            elif kind == EXT_FEATURE_TABLE:
                for i in range(0, length - length % 48, 48):
                    name = data[i + 2 : i + 48].split(b"\0")[0].decode("utf-8", "replace")
                    self.feature_names[(data[i], data[i + 1])] = name
            else:
                self.unknown_extensions.append((kind, data))
            pos += length + (-length % 8)

    def _read_snapshots(self, offset: int, count: int) -> list[Snapshot]:
        out = []
        pos = offset
        for _ in range(count):
            head = os.pread(self.fd, 40, pos)
            if len(head) < 40:
                self._fail("Snapshot table offset invalid")
            (l1_off, l1_size, id_len, name_len, dsec, dnsec, vmclock, vmsize, extra_len) = (
                struct.unpack(">QIHHIIQII", head)
            )
            if extra_len > 1024:
                self._fail("Too much extra metadata in snapshot table entry")
            body = os.pread(self.fd, extra_len + id_len + name_len, pos + 40)
            if len(body) < extra_len + id_len + name_len:
                self._fail("Snapshot table offset invalid")
            extra = body[:extra_len]
            sn = Snapshot(
                l1_off,
                l1_size,
                body[extra_len : extra_len + id_len].decode("utf-8", "replace"),
                body[extra_len + id_len :].decode("utf-8", "replace"),
                dsec,
                dnsec,
                vmclock,
                vmsize,
            )
            if extra_len >= 8:
                sn.vm_state_size = struct.unpack_from(">Q", extra, 0)[0]
            if extra_len >= 16:
                sn.disk_size = struct.unpack_from(">Q", extra, 8)[0]
            if extra_len >= 24:
                sn.icount = struct.unpack_from(">Q", extra, 16)[0]
                if sn.icount == 2**64 - 1:
                    sn.icount = None
            sn.extra = extra[24:]
            if l1_size > MAX_L1_SIZE // 8:
                self._fail("Snapshot L1 table too large")
            if l1_size:
                self._check_table(l1_off, l1_size * 8, "Snapshot L1 table")
            out.append(sn)
            pos += 40 + extra_len + id_len + name_len
            pos += -(pos - offset) % 8
        return out

    # -- basic properties -------------------------------------------------------------------

    def size(self) -> int:
        return self._size

    def cluster_size(self) -> int | None:
        return self.cs

    def file_length(self) -> int:
        return host_length(self.fd)

    def disk_usage(self) -> int:
        return os.fstat(self.fd).st_blocks * 512

    def info_specific(self) -> dict[str, object]:
        data: dict[str, object] = {"compat": "1.1" if self.version == 3 else "0.10"}
        data["compression-type"] = "zlib"
        if self.version == 3:
            data["lazy-refcounts"] = bool(self.compatible & COMPAT_LAZY_REFCOUNTS)
        data["refcount-bits"] = self.rc_bits
        if self.version == 3:
            data["corrupt"] = bool(self.incompatible & INCOMPAT_CORRUPT)
            data["extended-l2"] = False
        return data

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()

    def flush(self) -> None:
        if not self.read_only:
            os.fsync(self.fd)
        if self.backing is not None:
            self.backing.flush()

    # -- low-level I/O --------------------------------------------------------------------------

    def _pread(self, length: int, offset: int) -> bytes:
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as e:
            raise BlockError(os.strerror(e.errno), e.errno) from None
        if len(data) < length:
            data += bytes(length - len(data))
        return data

    def _pwrite(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as e:
            raise BlockError(os.strerror(e.errno), e.errno) from None
        end = offset
        if end > self.file_size:
            self.file_size = end

    # -- refcounts ------------------------------------------------------------------------------

    def _decode_refblock(self, raw: bytes) -> list[int]:
        bits = self.rc_bits
        if bits >= 8:
            fmt = {8: "B", 16: "H", 32: "I", 64: "Q"}[bits]
            return list(struct.unpack(f">{len(raw) * 8 // bits}{fmt}", raw))
        per = 8 // bits
        mask = (1 << bits) - 1
        return [(b >> (j * bits)) & mask for b in raw for j in range(per)]

    def _encode_refs(self, values: list[int]) -> bytes:
        bits = self.rc_bits
        if bits >= 8:
            fmt = {8: "B", 16: "H", 32: "I", 64: "Q"}[bits]
            return struct.pack(f">{len(values)}{fmt}", *values)
        per = 8 // bits
        out = bytearray(len(values) // per)
        for i, v in enumerate(values):
            out[i // per] |= v << ((i % per) * bits)
        return bytes(out)

    def _refblock(self, block_index: int) -> list[int] | None:
        """The refcounts of one refcount block (cached), or None when it is not allocated."""
        if block_index >= len(self.rt):
            return None
        off = self.rt[block_index] & REFT_OFFSET_MASK
        if not off:
            return None
        block = self._rb_cache.get(off)
        if block is None:
            block = self._decode_refblock(self._pread(self.cs, off))
            self._rb_cache[off] = block
        return block

    def refcount(self, cluster: int) -> int:
        block = self._refblock(cluster // self.rb_entries)
        return 0 if block is None else block[cluster % self.rb_entries]

    def _write_refs(self, block_index: int, lo: int, hi: int) -> None:
        """Write entries [lo, hi) of a cached refcount block to the file."""
        per = max(1, 8 // self.rc_bits)
        lo -= lo % per
        hi += -hi % per
        block = self._refblock(block_index)
        assert block is not None
        off = self.rt[block_index] & REFT_OFFSET_MASK
        self._pwrite(self._encode_refs(block[lo:hi]), off + lo * self.rc_bits // 8)

    def _last_used_cluster(self) -> int:
        for bi in range(len(self.rt) - 1, -1, -1):
            block = self._refblock(bi)
            if block is None:
                continue
            for j in range(len(block) - 1, -1, -1):
                if block[j]:
                    return bi * self.rb_entries + j
        return -1

    def _update_refcounts(self, deltas: dict[int, int]) -> None:
        """Add deltas to cluster refcounts: all validated first, then written block by block."""
        if not deltas:
            return
        rbe = self.rb_entries
        self._check_deltas(deltas)
        for c, d in deltas.items():
            if d > 0 and self._refblock(c // rbe) is None:
                self._new_refblock_for(c)
        changes: dict[int, list[tuple[int, int]]] = {}
        for c, d in deltas.items():
            if not d:
                continue
            old = self.refcount(c)
            new = old + d
            if new > self.rc_max:
                raise BlockError(
                    f"Refcount of cluster {c} would overflow (it is {old}, the maximum is "
                    f"{self.rc_max} with refcount_bits={self.rc_bits})",
                    errno=34,
                )
            if new < 0:
                raise BlockError(
                    f"Refcount of cluster {c} would drop below zero (image corrupt)", errno=5
                )
            changes.setdefault(c // rbe, []).append((c % rbe, new))
        for bi, items in changes.items():
            block = self._refblock(bi)
            assert block is not None
            lo = hi = items[0][0]
            for j, v in items:
                block[j] = v
                lo = min(lo, j)
                hi = max(hi, j)
                if v == 0:
                    c = bi * rbe + j
                    self._free_hint = min(self._free_hint, c)
                    self._forget(c * self.cs)
            self._write_refs(bi, lo, hi + 1)

    def _check_deltas(self, deltas: dict[int, int]) -> None:
        """Refuse (before any write) deltas that would overflow or underflow a refcount."""
        for c, d in deltas.items():
            old = self.refcount(c)
            if old + d > self.rc_max:
                raise BlockError(
                    f"Refcount of cluster {c} would overflow (it is {old}, the maximum is "
                    f"{self.rc_max} with refcount_bits={self.rc_bits})",
                    errno=34,
                )
            if old + d < 0:
                raise BlockError(
                    f"Refcount of cluster {c} would drop below zero (image corrupt)", errno=5
                )

    def _set_range(self, start: int, n: int, delta: int) -> None:
        """Add delta to the refcounts of clusters [start, start+n) whose refblocks exist."""
        rbe = self.rb_entries
        c = start
        end = start + n
        while c < end:
            bi = c // rbe
            block = self._refblock(bi)
            assert block is not None
            lo = c % rbe
            hi = min(rbe, lo + end - c)
            new = [v + delta for v in block[lo:hi]]  # one slice, not a Python loop per entry
            if max(new) > self.rc_max or min(new) < 0:
                raise BlockError(
                    f"Refcount of a cluster in {start}..{end - 1} out of range", errno=34
                )
            block[lo:hi] = new
            self._write_refs(bi, lo, hi)
            c += hi - lo

    def _forget(self, host_offset: int) -> None:
        self._l2_cache.pop(host_offset, None)
        if self._cluster_cache and self._cluster_cache[0] // self.cs == host_offset // self.cs:
            self._cluster_cache = None

    def _new_refblock_for(self, cluster: int) -> None:
        """Create the refcount block covering `cluster`, placed inside the range it covers."""
        rbe = self.rb_entries
        bi = cluster // rbe
        if bi >= len(self.rt):
            self._grow_reftable(bi + 1)
            if self._refblock(bi) is not None:
                return
        # the first free cluster of the block's range at or after the allocation frontier
        # (everything from _next_free on is free); it describes itself
        where = max(self._next_free, bi * rbe)
        if where >= (bi + 1) * rbe:
            # the block's range is below the frontier: its clusters are all free (no refblock)
            where = bi * rbe
            while where < (bi + 1) * rbe and self._in_use_without_refcount(where):
                where += 1
        values = [0] * rbe
        values[where - bi * rbe] = 1
        self._pwrite(self._encode_refs(values), where * self.cs)
        self._rb_cache[where * self.cs] = values
        self.rt[bi] = where * self.cs
        self._pwrite(struct.pack(">Q", self.rt[bi]), self.rt_offset + bi * 8)
        self._next_free = max(self._next_free, where + 1)

    def _new_refblock_at(self, bi: int, where: int) -> None:
        """Create refcount block bi in free cluster `where`, whose own block exists or is bi."""
        rbe = self.rb_entries
        values = [0] * rbe
        own = where // rbe == bi
        if own:
            values[where - bi * rbe] = 1
        self._pwrite(self._encode_refs(values), where * self.cs)
        self._rb_cache[where * self.cs] = values
        if not own:
            self._set_range(where, 1, +1)
        self.rt[bi] = where * self.cs
        self._pwrite(struct.pack(">Q", self.rt[bi]), self.rt_offset + bi * 8)
        self._next_free = max(self._next_free, where + 1)

    def _in_use_without_refcount(self, cluster: int) -> bool:
        # the header and reftable always have refcounts; a missing block means free clusters
        return cluster == 0

    def _grow_reftable(self, min_entries: int) -> None:
        """Move the refcount table to a bigger one at the end of the file."""
        cs, rbe = self.cs, self.rb_entries
        entries = max(min_entries, len(self.rt)) * 2
        while True:
            k = _ceil_div(entries * 8, cs)
            tstart = self._next_free
            m = 0
            while True:
                end = tstart + k + m
                missing = [
                    b
                    for b in range(tstart // rbe, (end - 1) // rbe + 1)
                    if b >= len(self.rt) or not (self.rt[b] & REFT_OFFSET_MASK)
                ]
                if len(missing) == m:
                    break
                m = len(missing)
            if (end - 1) // rbe < k * cs // 8:
                break
            entries = (end // rbe + 1) * 2
        if k * cs > MAX_REFTABLE_SIZE:
            raise BlockError("Reference count table too large", errno=27)
        new_rt = self.rt + [0] * (k * cs // 8 - len(self.rt))
        # the new refblocks, right after the new table
        new_blocks: dict[int, list[int]] = {}
        for j, b in enumerate(missing):
            new_rt[b] = (tstart + k + j) * cs
            new_blocks[b] = [0] * rbe
        old_rt = self.rt
        self.rt = new_rt
        for b, values in new_blocks.items():
            self._rb_cache[self.rt[b]] = values
        # refcounts of the new table and blocks: new blocks in memory, existing ones written
        touched: dict[int, list[int]] = {}
        for c in range(tstart, end):
            b = c // rbe
            block = self._refblock(b)
            assert block is not None
            block[c % rbe] += 1
            touched.setdefault(b, []).append(c % rbe)
        for b, values in new_blocks.items():
            self._pwrite(self._encode_refs(values), self.rt[b])
        for b, js in touched.items():
            if b not in new_blocks:
                self._write_refs(b, min(js), max(js) + 1)
        self._pwrite(struct.pack(f">{len(new_rt)}Q", *new_rt), tstart * cs)
        self._next_free = max(self._next_free, end)
        old_offset, old_clusters = self.rt_offset, self.rt_clusters
        self.rt_offset, self.rt_clusters = tstart * cs, k
        self._pwrite(struct.pack(">QI", self.rt_offset, self.rt_clusters), 48)
        del old_rt
        self._set_range(old_offset // cs, old_clusters, -1)
        self._free_hint = min(self._free_hint, old_offset // cs)

    def _find_free(self, n: int) -> int:
        """The first run of n free clusters, below the frontier when a hole fits."""
        c = self._free_hint
        run = 0
        while c < self._next_free:
            if self.refcount(c) == 0 and c != 0:
                run += 1
                if run == n:
                    return c - n + 1
            else:
                run = 0
            c += 1
        # no hole fits: the trailing free run (if any) grows past the frontier
        self._free_hint = self._next_free - run
        return self._next_free - run

    def _alloc(self, n: int) -> int:
        """Allocate n contiguous clusters (refcount 1); returns the host offset of the first."""
        rbe = self.rb_entries
        while True:
            start = self._find_free(n)
            last_block = (start + n - 1) // rbe
            if last_block >= len(self.rt):
                self._grow_reftable(last_block + 1)
                continue
            missing = [b for b in range(start // rbe, last_block + 1) if self._refblock(b) is None]
            if not missing:
                break
            # the missing refcount blocks go first, in the free clusters at the start of the
            # range (then the data after them): a block placed inside the data's range would
            # split it, and the next try would need yet another block
            for j, b in enumerate(missing):
                self._new_refblock_at(b, start + j)
        self._set_range(start, n, +1)
        self._next_free = max(self._next_free, start + n)
        if start == self._free_hint:
            self._free_hint = start + n
        return start * self.cs

    def _free(self, clusters: dict[int, int]) -> None:
        """Drop references (cluster index -> count)."""
        self._update_refcounts({c: -d for c, d in clusters.items()})

    # -- the map ---------------------------------------------------------------------------

    def _trim_caches(self) -> None:
        """Bound the L2 cache, only between requests: within one, a table handed out and
        then written must stay the cached copy (two copies of a table would diverge)."""
        if len(self._l2_cache) > L2_CACHE_TABLES:
            self._l2_cache.clear()

    def _load_l2(self, l2_offset: int, l1_index: int) -> list[int]:
        table = self._l2_cache.get(l2_offset)
        if table is not None:
            return table
        if l2_offset & (self.cs - 1):
            self._fail(f"L2 table offset {l2_offset:#x} unaligned (L1 index: {l1_index:#x})")
        if l2_offset + self.cs > self._file_limit():
            self._fail(
                f"L2 table offset {l2_offset:#x} beyond the end of the image file "
                f"(L1 index: {l1_index:#x})"
            )
        raw = self._pread(self.cs, l2_offset)
        table = list(struct.unpack(f">{self.l2_entries}Q", raw))
        self._l2_cache[l2_offset] = table
        return table

    def _kind(self, e: int) -> int:
        if e & COMPRESSED:
            return COMPRESSED_KIND
        if e & ZERO and self.version >= 3:
            return ZERO_ALLOC if e & OFFSET_MASK else ZERO_PLAIN
        if e & OFFSET_MASK:
            return NORMAL
        return UNALLOCATED

    def _check_data_offset(self, e: int, l2_offset: int, index: int) -> None:
        host = e & OFFSET_MASK
        if host & (self.cs - 1):
            self._fail(
                f"Cluster allocation offset {host:#x} unaligned (L2 offset: {l2_offset:#x}, "
                f"L2 index: {index:#x})"
            )
        if host >= self._file_limit():
            self._fail(
                f"Cluster offset {host:#x} beyond the end of the image file "
                f"(L2 offset: {l2_offset:#x}, L2 index: {index:#x})"
            )

    def _run(self, pos: int, maxlen: int) -> tuple[int, int, int, int]:
        """(kind, host offset or entry, bytes, in-cluster offset) of the run starting at pos.

        A run stays inside one L2 table; NORMAL runs are contiguous in the file too.
        """
        cs = self.cs
        cb = self.cluster_bits
        l1i = pos >> (cb + self.l2_bits)
        l2i = (pos >> cb) & (self.l2_entries - 1)
        inoff = pos & (cs - 1)
        table_left = (self.l2_entries - l2i) * cs - inoff
        limit = min(maxlen, table_left)
        l2_offset = self.l1[l1i] & OFFSET_MASK if l1i < len(self.l1) else 0
        if not l2_offset:
            return UNALLOCATED, 0, limit, inoff
        table = self._load_l2(l2_offset, l1i)
        e = table[l2i]
        kind = self._kind(e)
        if kind == COMPRESSED_KIND:
            return kind, e, min(limit, cs - inoff), inoff
        if kind in (NORMAL, ZERO_ALLOC):
            self._check_data_offset(e, l2_offset, l2i)
        n = cs - inoff
        i = l2i + 1
        host = e & OFFSET_MASK
        expect = host + cs
        last = l2i + _ceil_div(limit - n, cs) if limit > n else l2i
        while i <= last:
            f = table[i]
            k = self._kind(f)
            if k != kind:
                break
            if kind == NORMAL:
                if f & OFFSET_MASK != expect:
                    break
                self._check_data_offset(f, l2_offset, i)
                expect += cs
            n += cs
            i += 1
        return kind, host if kind in (NORMAL, ZERO_ALLOC) else e, min(n, limit), inoff

    def _read_compressed(self, e: int) -> bytes:
        coffset = e & self.coffset_mask
        nsect = ((e >> self.csize_shift) & self.csize_mask) + 1
        csize = nsect * 512 - (coffset & 511)
        if self._cluster_cache and self._cluster_cache[0] == coffset:
            return self._cluster_cache[1]
        if coffset >= self._file_limit():
            self._fail(f"Compressed cluster offset {coffset:#x} beyond the end of the image file")
        raw = os.pread(self.fd, csize, coffset)
        try:
            d = zlib.decompressobj(-15)
            data = d.decompress(raw, self.cs)
        except zlib.error:
            raise BlockError(f"Corrupt compressed cluster at offset {coffset:#x}") from None
        if len(data) < self.cs:
            raise BlockError(f"Corrupt compressed cluster at offset {coffset:#x}")
        self._cluster_cache = (coffset, data)
        return data

    def _read_backing(self, pos: int, n: int) -> bytes:
        if self.backing is None:
            return bytes(n)
        bsize = self.backing.size()
        if pos >= bsize:
            return bytes(n)
        take = min(n, bsize - pos)
        data = self.backing.read(pos, take)
        return data if take == n else data + bytes(n - take)

    def read(self, offset: int, length: int) -> bytes:
        self._trim_caches()
        return self._read(offset, length)

    def _read(self, offset: int, length: int) -> bytes:
        """read() without trimming the caches (for use inside a request)."""
        self.check_request(offset, length)
        return self._read_map(offset, length)

    def _read_map(self, offset: int, length: int) -> bytes:
        """Read through the active map, the bounds already checked (the vmstate area lies
        beyond the disk's size)."""
        parts: list[bytes] = []
        pos = offset
        end = offset + length
        while pos < end:
            kind, where, n, inoff = self._run(pos, end - pos)
            if kind == NORMAL:
                parts.append(self._pread(n, where + inoff))
            elif kind == UNALLOCATED:
                # the vmstate area (beyond the disk) is this image's alone: no backing below
                parts.append(self._read_backing(pos, n) if pos < self._size else bytes(n))
            elif kind == COMPRESSED_KIND:
                parts.append(self._read_compressed(where)[inoff : inoff + n])
            else:
                parts.append(bytes(n))
            pos += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def block_status(self, offset: int, length: int) -> list[Extent]:
        self._trim_caches()
        out: list[Extent] = []
        pos = offset
        end = min(offset + length, self._size)
        while pos < end:
            kind, where, n, inoff = self._run(pos, end - pos)
            if kind == NORMAL:
                ext = Extent(pos, n, True, False, True, where + inoff)
            elif kind == UNALLOCATED:
                ext = Extent(pos, n, False, self.backing is None, False)
            elif kind == COMPRESSED_KIND:
                ext = Extent(pos, n, True, False, True, None, compressed=True)
            elif kind == ZERO_ALLOC:
                ext = Extent(pos, n, True, True, False, where + inoff)
            else:
                ext = Extent(pos, n, True, True, False)
            prev = out[-1] if out else None
            if (
                prev is not None
                and (prev.allocated, prev.zero, prev.data, prev.compressed)
                == (ext.allocated, ext.zero, ext.data, ext.compressed)
                and (
                    (prev.host_offset is None and ext.host_offset is None)
                    or (
                        prev.host_offset is not None
                        and ext.host_offset is not None
                        and prev.host_offset + prev.length == ext.host_offset
                    )
                )
            ):
                out[-1] = Extent(
                    prev.start,
                    prev.length + n,
                    prev.allocated,
                    prev.zero,
                    prev.data,
                    prev.host_offset,
                    prev.compressed,
                )
            else:
                out.append(ext)
            pos += n
        return out

    # -- writing ---------------------------------------------------------------------------

    def _write_l1_entry(self, l1i: int) -> None:
        self._pwrite(struct.pack(">Q", self.l1[l1i]), self.l1_offset + l1i * 8)

    def _l2_for_write(self, l1i: int) -> tuple[int, list[int]]:
        """The L2 table for L1 index l1i, allocated or copied so that it may be written."""
        if l1i >= len(self.l1):
            self._grow_l1(l1i + 1)
        e = self.l1[l1i]
        old = e & OFFSET_MASK
        # COPIED is trusted only when the refcount agrees: a wrong flag must not make us write
        # into a table a snapshot shares
        if old and e & COPIED and self.refcount(old // self.cs) == 1:
            return old, self._load_l2(old, l1i)
        if old:
            # shared with a snapshot: copy it (the data clusters it maps keep their counts,
            # one reference from each table); loaded, so validated, before anything changes
            table = list(self._load_l2(old, l1i))
        else:
            table = [0] * self.l2_entries
        new = self._alloc(1)
        self._pwrite(struct.pack(f">{self.l2_entries}Q", *table), new)
        self._l2_cache[new] = table
        self.l1[l1i] = new | COPIED
        self._write_l1_entry(l1i)
        if old:
            self._free({old // self.cs: 1})
        return new, table

    def _grow_l1(self, entries: int) -> None:
        """Move the active L1 table to a bigger one (the header switches once it is written)."""
        if entries * 8 > MAX_L1_SIZE:
            raise BlockError("Active L1 table too large", errno=27)
        new_size = max(entries, len(self.l1) + len(self.l1) // 2)
        new_size = min(new_size, MAX_L1_SIZE // 8)
        clusters = _ceil_div(new_size * 8, self.cs)
        new_size = max(entries, min(clusters * self.cs // 8, MAX_L1_SIZE // 8))
        table = self.l1 + [0] * (new_size - len(self.l1))
        where = self._alloc(clusters)
        raw = struct.pack(f">{new_size}Q", *table)
        self._pwrite(raw + bytes(-len(raw) % self.cs), where)
        old_offset, old_size = self.l1_offset, len(self.l1)
        self.l1, self.l1_offset, self.l1_size = table, where, new_size
        self._pwrite(struct.pack(">IQ", new_size, where), 36)
        if old_size:
            self._free(
                {old_offset // self.cs + i: 1 for i in range(_ceil_div(old_size * 8, self.cs))}
            )

    def _old_bytes(self, guest: int, n: int) -> bytes:
        """What the guest sees now at [guest, guest+n) (for the parts of a cluster kept)."""
        if guest >= self._size:  # the vmstate area
            return self._read_map(guest, n)
        return self._read(guest, min(n, self._size - guest)) + bytes(max(0, guest + n - self._size))

    def _release_entry(self, e: int, refs: dict[int, int]) -> None:
        """Collect the references an L2 entry holds (to drop them once it is replaced)."""
        if not e:
            return
        kind = self._kind(e)
        if kind in (NORMAL, ZERO_ALLOC):
            c = (e & OFFSET_MASK) // self.cs
            refs[c] = refs.get(c, 0) + 1
        elif kind == COMPRESSED_KIND:
            for c in self._compressed_clusters(e):
                refs[c] = refs.get(c, 0) + 1

    def _compressed_clusters(self, e: int) -> range:
        coffset = e & self.coffset_mask
        nsect = ((e >> self.csize_shift) & self.csize_mask) + 1
        start = coffset & ~511
        return range(start // self.cs, (start + nsect * 512 - 1) // self.cs + 1)

    def write(self, offset: int, data: bytes) -> None:
        self._trim_caches()
        self.check_writable()
        self.check_request(offset, len(data))
        self._write_map(offset, data)

    def _write_map(self, offset: int, data: bytes) -> None:
        """Write through the active map, the bounds already checked."""
        view = memoryview(data)
        pos = offset
        end = offset + len(data)
        span = self.cs * self.l2_entries
        while pos < end:
            stop = min(end, (pos // span + 1) * span)
            self._write_in_table(pos, view[pos - offset : stop - offset])
            pos = stop

    def _write_in_table(self, pos: int, buf: memoryview) -> None:
        cs, cb = self.cs, self.cluster_bits
        l1i = pos >> (cb + self.l2_bits)
        end = pos + len(buf)
        first = (pos >> cb) & (self.l2_entries - 1)
        last = ((end - 1) >> cb) & (self.l2_entries - 1)
        self._validate_entries(l1i, first, last + 1)
        l2_offset, table = self._l2_for_write(l1i)
        base = pos - (pos & (cs - 1)) - first * cs  # guest offset of this table's first entry
        i = first
        updates: list[tuple[int, int]] = []
        freed: dict[int, int] = {}

        def owned(f: int) -> bool:
            # a data cluster this map alone references may be written in place
            return (
                f & COPIED != 0
                and self._kind(f) == NORMAL
                and self.refcount((f & OFFSET_MASK) // cs) == 1
            )

        while i <= last:
            e = table[i]
            in_place = owned(e)
            j = i + 1
            if in_place:
                while (
                    j <= last
                    and table[j] & OFFSET_MASK == (table[j - 1] & OFFSET_MASK) + cs
                    and owned(table[j])
                ):
                    j += 1
            else:
                while j <= last and not owned(table[j]):
                    j += 1
            g0 = base + i * cs  # guest range of clusters [i, j)
            g1 = base + j * cs
            lo = max(g0, pos)
            hi = min(g1, end)
            chunk = buf[lo - pos : hi - pos]
            if in_place:
                self._check_data_offset(e, l2_offset, i)
                self._pwrite(chunk, (e & OFFSET_MASK) + (lo - g0))
            else:
                # the kept parts are read (and so validated) before any allocation
                head = self._old_bytes(g0, lo - g0) if lo > g0 else b""
                tail = self._old_bytes(hi, g1 - hi) if hi < g1 else b""
                host = self._alloc(j - i)
                if lo == g0 and hi == g1:
                    self._pwrite(chunk, host)
                else:
                    self._pwrite(b"".join((head, chunk, tail)), host)
                for k in range(i, j):
                    self._release_entry(table[k], freed)
                    updates.append((k, (host + (k - i) * cs) | COPIED))
            i = j
        if updates:
            self._set_l2_entries(l2_offset, table, updates)
        if freed:
            self._free(freed)

    def _validate_entries(self, l1i: int, lo: int, hi: int) -> None:
        """Check entries [lo, hi) of an L2 table before anything replaces or writes them."""
        current = self.l1[l1i] & OFFSET_MASK if l1i < len(self.l1) else 0
        if not current:
            return
        table = self._load_l2(current, l1i)
        for k in range(lo, hi):
            kind = self._kind(table[k])
            if kind in (NORMAL, ZERO_ALLOC):
                self._check_data_offset(table[k], current, k)
            elif kind == COMPRESSED_KIND and table[k] & self.coffset_mask >= self._file_limit():
                self._fail(
                    f"Compressed cluster offset {table[k] & self.coffset_mask:#x} "
                    "beyond the end of the image file"
                )

    def _set_l2_entries(
        self, l2_offset: int, table: list[int], updates: list[tuple[int, int]]
    ) -> None:
        lo = min(k for k, _ in updates)
        hi = max(k for k, _ in updates)
        for k, v in updates:
            table[k] = v
        self._pwrite(struct.pack(f">{hi - lo + 1}Q", *table[lo : hi + 1]), l2_offset + lo * 8)

    def _map_clusters(self, offset: int, length: int, entry_for: object) -> None:
        """Replace the L2 entries of the whole clusters in [offset, offset+length)."""
        cs = self.cs
        first = _ceil_div(offset, cs)
        last = (offset + length) // cs
        if offset + length == self._size:
            last = _ceil_div(self._size, cs)
        c = first
        while c < last:
            l1i = c >> self.l2_bits
            stop = min(last, (l1i + 1) << self.l2_bits)
            if l1i < len(self.l1) and self.l1[l1i] & OFFSET_MASK or entry_for(None) != 0:
                lo = c & (self.l2_entries - 1)
                self._validate_entries(l1i, lo, lo + stop - c)
                l2_offset, table = self._l2_for_write(l1i)
                freed: dict[int, int] = {}
                updates = []
                for k in range(c & (self.l2_entries - 1), ((stop - 1) & (self.l2_entries - 1)) + 1):
                    new = entry_for(table[k])  # type: ignore[operator]
                    if new != table[k]:
                        if (table[k] & OFFSET_MASK) != (new & OFFSET_MASK) or self._kind(
                            table[k]
                        ) == COMPRESSED_KIND:
                            self._release_entry(table[k], freed)
                        updates.append((k, new))
                if updates:
                    self._set_l2_entries(l2_offset, table, updates)
                if freed:
                    self._free(freed)
            c = stop

    def _partial_zero(self, offset: int, length: int, whole: tuple[int, int]) -> None:
        """Write real zeroes to the parts of [offset, offset+length) outside whole clusters."""
        a, b = whole
        if a >= b:
            self.write(offset, bytes(length))
            return
        if offset < a:
            self.write(offset, bytes(a - offset))
        if offset + length > b:
            self.write(b, bytes(offset + length - b))

    def _whole(self, offset: int, length: int) -> tuple[int, int]:
        cs = self.cs
        a = _ceil_div(offset, cs) * cs
        end = offset + length
        b = end if end == self._size else end // cs * cs
        return a, max(a, b)

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        self._trim_caches()
        self.check_writable()
        self.check_request(offset, length)
        if not length:
            return
        a, b = self._whole(offset, length)
        if self.version < 3 and self.backing is not None:
            # v2 has no zero flag: only real zeroes hide the backing file
            self._zero_slow(offset, length)
            return
        self._partial_zero(offset, length, (a, b))
        if a < b:

            def zero_entry(e: int | None) -> int:
                if self.version < 3 or (not e and self.backing is None):
                    return 0  # unallocated reads as zeroes when nothing is below
                if e is None:
                    return ZERO
                if not unmap and self._kind(e) == NORMAL and e & COPIED:
                    return (e & OFFSET_MASK) | COPIED | ZERO
                if self._kind(e) == ZERO_ALLOC and not unmap and e & COPIED:
                    return e
                return ZERO

            self._map_clusters(a, b - a, zero_entry)

    def _zero_slow(self, offset: int, length: int) -> None:
        """Write real zeroes, 8 MiB at a time."""
        step = 8 << 20
        for p in range(offset, offset + length, step):
            self.write(p, bytes(min(step, offset + length - p)))

    def discard(self, offset: int, length: int) -> None:
        self._trim_caches()
        self.check_writable()
        self.check_request(offset, length)
        a, b = self._whole(offset, length)
        if a >= b:
            return  # QEMU ignores discards of partial clusters
        if all(not (self.l1[i] & OFFSET_MASK) for i in range(len(self.l1))) and not self.backing:
            return

        def discard_entry(e: int | None) -> int:
            # QEMU's choice: a discarded cluster that had data, or that would show the backing
            # file's data once unmapped, reads as zeroes (v3); v2 can only unmap it
            if e is None or self.version < 3:
                return 0
            if self.backing is not None or self._kind(e) != UNALLOCATED:
                return ZERO
            return 0

        self._map_clusters(a, b - a, discard_entry)

    def make_empty(self) -> None:
        """Drop every cluster of the active map (qemu-img commit empties the overlay so)."""
        self.check_writable()
        if self._size:
            saved = self.backing
            self.backing = None  # discard to 'unallocated', not to zero clusters
            try:
                self._map_clusters(0, self._size, lambda e: 0)
            finally:
                self.backing = saved

    # -- compressed writes -------------------------------------------------------------------

    def write_compressed(self, offset: int, data: bytes) -> None:
        """Write whole clusters compressed (as qemu-img convert -c): to unallocated clusters only.

        A cluster that does not shrink is stored uncompressed. The compressed streams are
        packed back to back, one write for the batch.
        """
        self._trim_caches()
        self.check_writable()
        cs = self.cs
        if offset % cs or (len(data) % cs and offset + len(data) != self._size):
            raise BlockError("Compressed writes must be cluster aligned", errno=22)
        view = memoryview(data)

        def deflate(p: int) -> bytes | None:
            chunk = bytes(view[p : p + cs])
            if len(chunk) < cs:
                chunk += bytes(cs - len(chunk))
            c = zlib.compressobj(6, zlib.DEFLATED, -12, 9)  # QEMU's raw deflate, 4 KiB window
            out = c.compress(chunk) + c.flush()
            return out if len(out) < cs - 512 else None

        starts = range(0, len(data), cs)
        # zlib releases the GIL: the clusters of a batch compress in parallel, one per core
        streams = (
            list(_compressor().map(deflate, starts))
            if len(starts) > 1
            else [deflate(p) for p in starts]
        )
        blobs = [((offset + p) // cs, b) for p, b in zip(starts, streams)]
        # lay the streams out back to back (relative offsets first); a cluster may hold only
        # rc_max streams (narrow refcounts), past that the next stream starts a new cluster
        entries: dict[int, int] = {}
        uncompressed: list[int] = [g for g, b in blobs if b is None]
        layout: list[tuple[int, int, bytes]] = []  # (guest cluster, relative offset, stream)
        counts: dict[int, int] = {}
        pos = 0
        for g, b in blobs:
            if b is None:
                continue
            if any(
                counts.get(c, 0) >= self.rc_max
                for c in range(pos // cs, (pos + len(b) - 1) // cs + 1)
            ):
                pos += -pos % cs
            layout.append((g, pos, b))
            for c in range(pos // cs, (pos + len(b) - 1) // cs + 1):
                counts[c] = counts.get(c, 0) + 1
            pos += len(b)
        if layout:
            n = _ceil_div(pos, cs)
            host = self._alloc(n)
            packed = bytearray(pos)
            for g, rel, b in layout:
                where = host + rel
                nsect = (where + len(b) - 1) // 512 - where // 512
                entries[g] = COMPRESSED | (nsect << self.csize_shift) | where
                packed[rel : rel + len(b)] = b
            # _alloc gave each cluster one reference; set them to the number of streams in it
            first = host // cs
            self._update_refcounts({first + c: r - 1 for c, r in counts.items() if r != 1})
            self._pwrite(packed, host)
        for g in uncompressed:
            self.write(g * cs, view[(g * cs - offset) : (g * cs - offset) + cs])
        for g, e in entries.items():
            l1i = g >> self.l2_bits
            l2_offset, table = self._l2_for_write(l1i)
            k = g & (self.l2_entries - 1)
            freed: dict[int, int] = {}
            self._release_entry(table[k], freed)
            self._set_l2_entries(l2_offset, table, [(k, e)])
            if freed:
                self._free(freed)

    # -- resize ------------------------------------------------------------------------------

    def truncate(self, new_size: int, shrink: bool = False) -> None:
        self.check_writable()
        if new_size % 512:
            raise BlockError("The new size must be a multiple of 512", errno=22)
        if self.snapshots:
            raise BlockError("Can't resize an image which has snapshots", errno=95)
        if new_size < self._size:
            old = self._size
            cs = self.cs
            start = _ceil_div(new_size, cs) * cs
            if start < old:
                saved = self.backing
                self.backing = None
                try:
                    self._map_clusters(start, old - start, lambda e: 0)
                finally:
                    self.backing = saved
        needed = _ceil_div(new_size, self.cs * self.l2_entries)
        if needed > len(self.l1):
            self._grow_l1(needed)
        self._size = new_size
        self._pwrite(struct.pack(">Q", new_size), 24)

    # -- snapshots ---------------------------------------------------------------------------

    def _tree_refs(self, l1: list[int], refs: dict[int, int], delta: int = 1) -> None:
        """Add delta for every cluster a map references (L2 tables and data)."""
        cs = self.cs
        for l1i, e in enumerate(l1):
            off = e & OFFSET_MASK
            if not off:
                continue
            refs[off // cs] = refs.get(off // cs, 0) + delta
            for k, f in enumerate(self._load_l2(off, l1i)):
                if not f:
                    continue
                kind = self._kind(f)
                if kind in (NORMAL, ZERO_ALLOC):
                    self._check_data_offset(f, off, k)
                    c = (f & OFFSET_MASK) // cs
                    refs[c] = refs.get(c, 0) + delta
                elif kind == COMPRESSED_KIND:
                    for c in self._compressed_clusters(f):
                        refs[c] = refs.get(c, 0) + delta

    def _read_l1(self, offset: int, size: int) -> list[int]:
        raw = self._pread(size * 8, offset)
        return list(struct.unpack(f">{size}Q", raw))

    def _write_snapshot_table(self, snapshots: list[Snapshot]) -> None:
        """Write a new snapshot table, switch the header to it, free the old one."""
        raw = b"".join(s.encode() for s in snapshots)
        old_offset, old_size = self.snapshots_offset, self.snapshot_table_size
        if raw:
            n = _ceil_div(len(raw), self.cs)
            where = self._alloc(n)
            self._pwrite(raw + bytes(-len(raw) % self.cs), where)
        else:
            where = 0
        self._pwrite(struct.pack(">IQ", len(snapshots), where), 60)
        self.snapshots, self.snapshots_offset, self.snapshot_table_size = (
            snapshots,
            where,
            len(raw),
        )
        if old_size and old_offset:
            first = old_offset // self.cs
            self._free({first + i: 1 for i in range(_ceil_div(old_size, self.cs))})

    def find_snapshot(self, name: str) -> Snapshot | None:
        for s in self.snapshots:
            if s.id == name:
                return s
        for s in self.snapshots:
            if s.name == name:
                return s
        return None

    # -- the vmstate area ----------------------------------------------------------------
    #
    # A machine snapshot's CPU, device and RAM state is stored as QEMU stores it: in the
    # guest address space of the image, from the first L1 entry wholly beyond the disk, written
    # through the active map just before the snapshot copies that map. The snapshot entry says
    # how many bytes (vm_state_size); the active map then drops them again (QEMU's
    # qcow2_snapshot_create does, so the next snapshot does not copy them on write).

    @property
    def vm_state_offset(self) -> int:
        span = self.cs * self.l2_entries
        return _ceil_div(self._size, span) * span

    def write_vmstate(self, data: bytes, pos: int = 0) -> None:
        """Write vmstate bytes at `pos` of the vmstate area of the active map."""
        self._trim_caches()
        self.check_writable()
        self._write_map(self.vm_state_offset + pos, data)

    def read_vmstate(self, length: int, pos: int = 0) -> bytes:
        """Read vmstate bytes of the active map (after snapshot_apply: the snapshot's)."""
        self._trim_caches()
        return self._read_map(self.vm_state_offset + pos, length)

    def read_snapshot_vmstate(self, sn: Snapshot) -> bytes:
        """The vmstate a snapshot holds, read through its own L1 table (the active map is
        left alone: a machine can refuse the state before its disk is rolled back)."""
        if not sn.vm_state_size:
            return b""
        sn_l1 = self._read_l1(sn.l1_offset, sn.l1_size) if sn.l1_size else []
        saved_l1 = self.l1
        self._trim_caches()
        self.l1 = [e & ~COPIED for e in sn_l1]
        try:
            return self._read_map(self.vm_state_offset, sn.vm_state_size)
        finally:
            self.l1 = saved_l1

    def _drop_vmstate(self, size: int) -> None:
        """Unmap `size` bytes of vmstate from the active map (they stay the snapshot's)."""
        if size:
            length = _ceil_div(size, self.cs) * self.cs
            self._map_clusters(self.vm_state_offset, length, lambda e: 0)

    def snapshot_create(
        self,
        name: str,
        vm_clock_nsec: int = 0,
        vm_state_size: int = 0,
        icount: int | None = 0,
    ) -> Snapshot:
        """Snapshot the active map; with vm_state_size, the vmstate written just before
        (write_vmstate) belongs to the snapshot alone afterwards."""
        self.check_writable()
        ids = [int(s.id) for s in self.snapshots if s.id.isdigit()]
        now = time.time_ns()
        sn = Snapshot(
            0,
            len(self.l1),
            str(max(ids, default=0) + 1),
            name,
            now // 10**9,
            now % 10**9,
            vm_clock_nsec,
            vm_state_size,
            disk_size=self._size,
            icount=icount,
        )
        refs: dict[int, int] = {}
        self._tree_refs(self.l1, refs)
        self._update_refcounts(refs)  # validated (overflow) before anything is written
        self._clear_copied()
        if self.l1:
            n = _ceil_div(len(self.l1) * 8, self.cs)
            where = self._alloc(n)
            raw = struct.pack(f">{len(self.l1)}Q", *[e & ~COPIED for e in self.l1])
            self._pwrite(raw + bytes(-len(raw) % self.cs), where)
            sn.l1_offset = where
        self._write_snapshot_table(self.snapshots + [sn])
        self._drop_vmstate(vm_state_size)
        return sn

    def _clear_copied(self) -> None:
        for l1i, e in enumerate(self.l1):
            off = e & OFFSET_MASK
            if not off:
                continue
            table = self._load_l2(off, l1i)
            updates = [(k, f & ~COPIED) for k, f in enumerate(table) if f & COPIED]
            if updates:
                self._set_l2_entries(off, table, updates)
            if e & COPIED:
                self.l1[l1i] = e & ~COPIED
                self._write_l1_entry(l1i)

    def fix_copied_flags(self) -> int:
        """Set COPIED exactly where the refcount is 1 in the active map; returns fixes made."""
        fixed = 0
        cs = self.cs
        for l1i, e in enumerate(self.l1):
            off = e & OFFSET_MASK
            if not off:
                continue
            rc = self.refcount(off // cs)
            want = off | (COPIED if rc == 1 else 0)
            if rc == 1:
                try:
                    table = self._load_l2(off, l1i)
                except BlockError:
                    continue  # a broken pointer: check reports it, nothing to flag here
                updates = []
                for k, f in enumerate(table):
                    kind = self._kind(f)
                    if kind not in (NORMAL, ZERO_ALLOC):
                        continue
                    one = self.refcount((f & OFFSET_MASK) // cs) == 1
                    g = f | COPIED if one else f & ~COPIED
                    if g != f:
                        updates.append((k, g))
                if updates:
                    fixed += len(updates)
                    self._set_l2_entries(off, table, updates)
            if want != e:
                fixed += 1
                self.l1[l1i] = want
                self._write_l1_entry(l1i)
        return fixed

    def snapshot_apply(self, name: str) -> None:
        self.check_writable()
        sn = self.find_snapshot(name)
        if sn is None:
            raise BlockError("Failed to load snapshot: No such file or directory", errno=2)
        if sn.disk_size is not None and sn.disk_size != self._size:
            raise BlockError(
                "qcow2: Loading snapshots with different disk size is not supported", errno=95
            )
        sn_l1 = self._read_l1(sn.l1_offset, sn.l1_size) if sn.l1_size else []
        # both maps are walked (validated) before the first write
        up: dict[int, int] = {}
        self._tree_refs(sn_l1, up, +1)
        down: dict[int, int] = {}
        self._tree_refs(self.l1, down, -1)
        # what both maps reference keeps its count throughout: only the differences change
        # (raised before the switch, dropped after), so no count passes through a peak
        for c in list(up):
            if c in down:
                both = min(up[c], -down[c])
                up[c] -= both
                down[c] += both
        up = {c: d for c, d in up.items() if d}
        down = {c: d for c, d in down.items() if d}
        self._check_deltas(up)
        self._update_refcounts(up)
        if len(sn_l1) > len(self.l1):
            self._grow_l1(len(sn_l1))
        self.l1 = [e & ~COPIED for e in sn_l1] + [0] * (len(self.l1) - len(sn_l1))
        self._pwrite(struct.pack(f">{len(self.l1)}Q", *self.l1), self.l1_offset)
        self._update_refcounts(down)
        self.fix_copied_flags()

    def snapshot_delete(self, name: str) -> None:
        self.check_writable()
        sn = self.find_snapshot(name)
        if sn is None:
            raise BlockError("snapshot not found", errno=2)
        sn_l1 = self._read_l1(sn.l1_offset, sn.l1_size) if sn.l1_size else []
        refs: dict[int, int] = {}
        self._tree_refs(sn_l1, refs, -1)
        self._tree_refs(self.l1, {}, 0)  # validates the active map fix_copied_flags walks
        if sn.l1_size:
            first = sn.l1_offset // self.cs
            for i in range(_ceil_div(sn.l1_size * 8, self.cs)):
                refs[first + i] = refs.get(first + i, 0) - 1
        self._check_deltas(refs)
        # the table first: interrupted later, the snapshot's clusters are leaked, not lost
        self._write_snapshot_table([s for s in self.snapshots if s is not sn])
        self._update_refcounts(refs)
        self.fix_copied_flags()

    # -- header rewriting --------------------------------------------------------------------

    def _set_incompatible(self, bits: int) -> None:
        if self.version >= 3:
            self.incompatible = bits
            self._pwrite(struct.pack(">Q", bits), 72)

    def rewrite_header(
        self,
        backing_file: str | None = None,
        backing_format: str | None = None,
        version: int | None = None,
        lazy_refcounts: bool | None = None,
    ) -> None:
        """Write cluster 0 again with new backing file / format / compat level."""
        self.check_writable()
        if backing_file is not None:
            self.backing_filename = backing_file
        if backing_format is not None:
            self.backing_format = backing_format
        if version is not None:
            self.version = version
        if lazy_refcounts is not None:
            if lazy_refcounts:
                self.compatible |= COMPAT_LAZY_REFCOUNTS
            else:
                self.compatible &= ~COMPAT_LAZY_REFCOUNTS
        raw = build_header(
            version=self.version,
            cluster_bits=self.cluster_bits,
            size=self._size,
            l1_size=len(self.l1),
            l1_offset=self.l1_offset,
            rt_offset=self.rt_offset,
            rt_clusters=self.rt_clusters,
            nb_snapshots=len(self.snapshots),
            snapshots_offset=self.snapshots_offset,
            incompatible=self.incompatible,
            compatible=self.compatible if self.version >= 3 else 0,
            autoclear=self.autoclear,
            refcount_order=self.refcount_order,
            backing_file=self.backing_filename,
            backing_format=self.backing_format if self.backing_filename else "",
            extra_extensions=self.unknown_extensions,
        )
        if len(raw) > self.cs:
            raise BlockError("Header too large for the image's cluster size", errno=27)
        self._pwrite(raw, 0)
        self.header_length = V3_HEADER_LENGTH if self.version >= 3 else HEADER_V2.size

    def preallocate(self, mode: str) -> None:
        """preallocation=metadata|falloc|full of a new image (see _preallocate)."""
        _preallocate(self, mode)

    # -- check -------------------------------------------------------------------------------

    def check(self, repair: str | None = None) -> CheckResult:
        """Compare every refcount with the references the metadata holds (qemu-img check)."""
        res = CheckResult()
        cs = self.cs
        file_clusters = _ceil_div(host_length(self.fd), cs)
        refs: dict[int, int] = {}

        def ref(offset: int, length: int = 1) -> None:
            for c in range(offset // cs, (offset + max(length, 1) - 1) // cs + 1):
                refs[c] = refs.get(c, 0) + 1

        ref(0, cs)
        ref(self.rt_offset, self.rt_clusters * cs)
        if self.snapshot_table_size:
            ref(self.snapshots_offset, self.snapshot_table_size)
        for i, e in enumerate(self.rt):
            off = e & REFT_OFFSET_MASK
            if off:
                if off & (cs - 1):
                    res.messages.append(
                        f"ERROR refcount block {i} is not cluster aligned; "
                        "refcount table entry corrupted"
                    )
                    res.corruptions += 1
                    continue
                ref(off, cs)
        res.total_clusters = _ceil_div(self._size, cs)

        def walk(l1: list[int], l1_offset: int, active: bool) -> None:
            if l1:
                ref(l1_offset, len(l1) * 8)
            next_contig = 0
            for l1i, e in enumerate(l1):
                off = e & OFFSET_MASK
                if not off:
                    continue
                if off & (cs - 1):
                    res.messages.append(
                        f"ERROR l2_offset={off:x}: Table is not cluster aligned; L1 entry corrupted"
                    )
                    res.corruptions += 1
                    continue
                if off // cs >= file_clusters:
                    res.messages.append(f"ERROR: invalid cluster offset=0x{off:x}")
                    res.corruptions += 1
                    continue
                ref(off, cs)
                table = self._load_l2(off, l1i)
                for k, f in enumerate(table):
                    kind = self._kind(f)
                    if kind == COMPRESSED_KIND:
                        if active:
                            # QEMU counts compressed clusters as fragmented too
                            res.allocated_clusters += 1
                            res.compressed_clusters += 1
                            res.fragmented_clusters += 1
                        coffset = f & self.coffset_mask
                        nsect = ((f >> self.csize_shift) & self.csize_mask) + 1
                        ref(coffset & ~511, nsect * 512)
                    elif kind in (NORMAL, ZERO_ALLOC):
                        host = f & OFFSET_MASK
                        if host & (cs - 1):
                            res.messages.append(
                                f"ERROR offset={host:x}: Cluster is not properly aligned; "
                                "L2 entry corrupted"
                            )
                            res.corruptions += 1
                            continue
                        if host // cs >= file_clusters:
                            res.messages.append(f"ERROR: invalid cluster offset=0x{host:x}")
                            res.corruptions += 1
                            continue
                        if active:
                            res.allocated_clusters += 1
                            if next_contig and host != next_contig:
                                res.fragmented_clusters += 1
                            next_contig = host + cs
                        ref(host, cs)
                    del k

        walk(self.l1, self.l1_offset, True)
        for sn in self.snapshots:
            walk(self._read_l1(sn.l1_offset, sn.l1_size) if sn.l1_size else [], sn.l1_offset, False)

        highest = -1
        top = max(max(refs, default=0) + 1, len(self.rt) * self.rb_entries)
        limit = max(max(refs, default=0) + 1, self._next_free, file_clusters)
        fixes: dict[int, int] = {}
        for c in range(min(top, limit)):
            have = self.refcount(c)
            want = refs.get(c, 0)
            if have or want:
                highest = c
            if have == want:
                continue
            if have < want:
                res.messages.append(f"ERROR cluster {c} refcount={have} reference={want}")
                res.corruptions += 1
                if repair == "all":
                    fixes[c] = want - have
            else:
                res.messages.append(f"Leaked cluster {c} refcount={have} reference={want}")
                res.leaks += 1
                if repair in ("leaks", "all"):
                    fixes[c] = want - have
            if c in fixes:
                res.messages.append(f"Repairing cluster {c} refcount={have} reference={want}")
        if fixes and not self.read_only:
            self._update_refcounts(fixes)
            for d in fixes.values():
                if d < 0:
                    res.leaks_fixed += 1
                else:
                    res.corruptions_fixed += 1
        # the COPIED flags of the active map (only meaningful with consistent refcounts)
        for l1i, e in enumerate(self.l1):
            off = e & OFFSET_MASK
            if not off or off & (cs - 1) or off // cs >= file_clusters:
                continue
            rc = self.refcount(off // cs)
            if (rc == 1) != bool(e & COPIED):
                res.messages.append(
                    f"ERROR OFLAG_COPIED L2 cluster: l1_index={l1i} l1_entry={e:x} refcount={rc}"
                )
                res.corruptions += 1
            for f in self._load_l2(off, l1i):
                if self._kind(f) not in (NORMAL, ZERO_ALLOC):
                    continue
                host = f & OFFSET_MASK
                if host & (cs - 1) or host // cs >= file_clusters:
                    continue
                drc = self.refcount(host // cs)
                if (drc == 1) != bool(f & COPIED):
                    res.messages.append(
                        f"ERROR OFLAG_COPIED data cluster: l2_entry={f:x} refcount={drc}"
                    )
                    res.corruptions += 1
        if repair == "all" and not self.read_only:
            fixed = self.fix_copied_flags()
            res.corruptions_fixed += min(fixed, res.corruptions - res.corruptions_fixed)
        res.image_end_offset = (highest + 1) * cs
        return res


def build_header(
    *,
    version: int,
    cluster_bits: int,
    size: int,
    l1_size: int,
    l1_offset: int,
    rt_offset: int,
    rt_clusters: int,
    nb_snapshots: int = 0,
    snapshots_offset: int = 0,
    incompatible: int = 0,
    compatible: int = 0,
    autoclear: int = 0,
    refcount_order: int = 4,
    backing_file: str = "",
    backing_format: str = "",
    extra_extensions: list[tuple[int, bytes]] | None = None,
    feature_table: bool = True,
) -> bytes:
    """The bytes of cluster 0 up to the end of the backing file name, QEMU's layout.

    The feature name table is optional: like QEMU, leave it out when the header would not fit
    in one cluster with it.
    """
    if feature_table:
        full = build_header(
            version=version,
            cluster_bits=cluster_bits,
            size=size,
            l1_size=l1_size,
            l1_offset=l1_offset,
            rt_offset=rt_offset,
            rt_clusters=rt_clusters,
            nb_snapshots=nb_snapshots,
            snapshots_offset=snapshots_offset,
            incompatible=incompatible,
            compatible=compatible,
            autoclear=autoclear,
            refcount_order=refcount_order,
            backing_file=backing_file,
            backing_format=backing_format,
            extra_extensions=extra_extensions,
            feature_table=False,
        )
        if len(full) + 8 + 48 * len(FEATURE_NAMES) > (1 << cluster_bits) or version < 3:
            return full

    def ext(kind: int, data: bytes) -> bytes:
        return struct.pack(">II", kind, len(data)) + data + bytes(-len(data) % 8)

    exts = b""
    if backing_format:
        exts += ext(EXT_BACKING_FORMAT, backing_format.encode())
    if version >= 3 and feature_table:
        table = b"".join(struct.pack(">BB46s", t, b, n.encode()) for t, b, n in FEATURE_NAMES)
        exts += ext(EXT_FEATURE_TABLE, table)
    for kind, data in extra_extensions or []:
        exts += ext(kind, data)
    exts += struct.pack(">II", EXT_END, 0)
    header_len = V3_HEADER_LENGTH if version >= 3 else HEADER_V2.size
    name = backing_file.encode()
    backing_offset = header_len + len(exts) if name else 0
    fixed = HEADER_V2.pack(
        MAGIC,
        version,
        backing_offset,
        len(name),
        cluster_bits,
        size,
        0,
        l1_size,
        l1_offset,
        rt_offset,
        rt_clusters,
        nb_snapshots,
        snapshots_offset,
    )
    if version >= 3:
        fixed += HEADER_V3.pack(incompatible, compatible, autoclear, refcount_order, header_len)
        fixed += bytes(header_len - len(fixed))  # compression type zlib (0) and padding
    return fixed + exts + name


def create_qcow2(
    filename: str,
    size: int,
    *,
    cluster_size: int = 65536,
    version: int = 3,
    backing_file: str = "",
    backing_format: str = "",
    preallocation: str = "off",
    lazy_refcounts: bool = False,
    refcount_bits: int = 16,
) -> None:
    """Create an empty qcow2 image (header, refcount table and block, L1 table), as QEMU lays it."""
    cluster_bits = cluster_size.bit_length() - 1
    if (
        cluster_size != 1 << cluster_bits
        or not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS
    ):
        raise BlockError("Cluster size must be a power of two between 512 and 2048k", errno=22)
    if refcount_bits not in (1, 2, 4, 8, 16, 32, 64):
        raise BlockError("Refcount width must be a power of two and may not exceed 64 bits")
    if version < 3 and refcount_bits != 16:
        raise BlockError(
            "Different refcount widths than 16 bits require compatibility level 1.1 or above "
            "(use compat=1.1 or greater)"
        )
    if version < 3 and lazy_refcounts:
        raise BlockError(
            "Lazy refcounts only supported with compatibility level 1.1 and above (use "
            "compat=1.1 or greater)"
        )
    size = _ceil_div(size, 512) * 512  # QEMU rounds the virtual size up to whole sectors
    cs = cluster_size
    refcount_order = refcount_bits.bit_length() - 1
    rbe = cs * 8 // refcount_bits
    l2_entries = cs // 8
    l1_size = _ceil_div(size, cs * l2_entries)
    if l1_size * 8 > MAX_L1_SIZE:
        raise BlockError("Image size is too large for this cluster size", errno=27)
    l1_clusters = _ceil_div(l1_size * 8, cs)
    # header, refcount table, refcount blocks, L1: enough blocks and table for themselves
    blocks = table = 1
    while True:
        total = 1 + table + blocks + l1_clusters
        nb = _ceil_div(total, rbe)
        nt = _ceil_div(nb * 8, cs)
        if (nb, nt) == (blocks, table):
            break
        blocks, table = nb, nt
    rt_offset = cs
    rb_offset = rt_offset + table * cs
    l1_offset = rb_offset + blocks * cs
    end = l1_offset + l1_clusters * cs
    header = build_header(
        version=version,
        cluster_bits=cluster_bits,
        size=size,
        l1_size=l1_size,
        l1_offset=l1_offset if l1_size else 0,
        rt_offset=rt_offset,
        rt_clusters=table,
        compatible=COMPAT_LAZY_REFCOUNTS if lazy_refcounts else 0,
        refcount_order=refcount_order,
        backing_file=backing_file,
        backing_format=backing_format if backing_file else "",
    )
    if len(header) > cs:
        raise BlockError("Header too large for the cluster size (backing file name too long?)")
    reftable = struct.pack(
        f">{table * cs // 8}Q",
        *[rb_offset + i * cs for i in range(blocks)] + [0] * (table * cs // 8 - blocks),
    )
    nclusters = end // cs
    scratch = Qcow2Image.__new__(Qcow2Image)
    scratch.rc_bits = refcount_bits
    per = max(1, 8 // refcount_bits)
    ones = nclusters + (-nclusters % per)
    head = scratch._encode_refs([1] * nclusters + [0] * (ones - nclusters))
    refblocks = head + bytes(blocks * cs - len(head))
    try:
        fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise BlockError(
            f"Could not create '{filename}': {os.strerror(e.errno)}", e.errno
        ) from None
    try:
        image = header + bytes(cs - len(header)) + reftable + refblocks + bytes(l1_clusters * cs)
        os.pwrite(fd, image, 0)
    finally:
        os.close(fd)
    if preallocation != "off":
        img = Qcow2Image(filename, read_only=False, open_backing=False)
        try:
            img.preallocate(preallocation)
        finally:
            img.close()


def _preallocate(self: Qcow2Image, mode: str) -> None:
    """Map every guest cluster to a data cluster (metadata), and allocate the file (falloc/full)."""
    cs = self.cs
    clusters = _ceil_div(self._size, cs)
    first_data = None
    for l1i in range(_ceil_div(clusters, self.l2_entries)):
        n = min(self.l2_entries, clusters - l1i * self.l2_entries)
        l2_offset, table = self._l2_for_write(l1i)
        host = self._alloc(n)
        if first_data is None:
            first_data = host
        self._set_l2_entries(l2_offset, table, [(k, (host + k * cs) | COPIED) for k in range(n)])
    end = self._next_free * cs
    if mode == "metadata":
        os.ftruncate(self.fd, max(end, host_length(self.fd)))
    elif mode == "falloc":
        os.posix_fallocate(self.fd, 0, end)
    elif mode == "full":
        step = 1 << 20
        start = first_data if first_data is not None else end
        for p in range(start, end, step):
            os.pwrite(self.fd, bytes(min(step, end - p)), p)
    self.file_size = host_length(self.fd)
