"""Whole-machine snapshots (savevm / loadvm / delvm / info snapshots / -loadvm).

As QEMU does, a machine snapshot is an internal snapshot of every writable qcow2 disk, the
first of which also keeps the machine's state ("vmstate") in its vmstate area
(block/qcow2.py) and the snapshot entry's vm_state_size, date and VM clock. The vmstate format
is ours, not QEMU's migration stream: a magic and a version lead it, so a QEMU-made vmstate (or
ours in QEMU) is refused cleanly.

What the vmstate holds, zlib-compressed:
- per vCPU: unicorn's context_save() bytes (registers and system registers: the whole CPU
  state of the engine) and the Python state of the vCPU object (timers, pending lines);
- every device's state, through a small protocol: a device may define
  `snapshot_state() -> dict` / `restore_state(dict)`; otherwise its plain fields (numbers,
  strings, bytes, containers of those, nested plain dataclasses such as a GIC bank or a
  virtqueue) are saved and written back. Anything else (engines, sockets, threads, backends,
  callbacks, other devices) is configuration the freshly built machine already has;
- guest RAM;
- the VM clock (run time of the machine, as QEMU's vm_clock_nsec counts it).

A snapshot restores onto a machine built from the same configuration: board, CPU model, RAM
size and CPU count are checked first, in QEMU's words where QEMU has them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH
from unicorn.unicorn_py3.unicorn import UcContext

from qemuser.system.block.errors import BlockError
from qemuser.system.block.qcow2 import Qcow2Image, Snapshot
from qemuser.system.block.sizes import size_to_str
from qemuser.system.drive import Drive

if TYPE_CHECKING:
    from qemuser.system.machine import Machine

MAGIC = b"QEMUSER-VMSTATE\0"
VERSION = 1
QEMU_MAGIC = b"QEVM"  # QEMU's migration stream (QEMU_VM_FILE_MAGIC)
BLOB_MIN = 4096  # byte strings at least this long go to binary sections, not the JSON
_HEAD = struct.Struct(">4sII")  # section tag, index, length
# a vmstate taken apart: machine description, CPU contexts, blobs, RAM
Parsed = tuple[dict[str, object], list[bytes], list[bytes], bytes | memoryview]


class SnapshotError(Exception):
    """A savevm/loadvm/delvm failure, as one line in QEMU's words."""


class StatefulDevice(Protocol):
    """The explicit protocol a device with state beyond plain fields implements."""

    def snapshot_state(self) -> dict[str, object]: ...

    def restore_state(self, state: dict[str, object]) -> None: ...


# --- plain state ------------------------------------------------------------------------------

_SCALARS = (bool, int, float, str, type(None))


class _Encoder:
    """Plain values to JSON-able ones; big byte strings to numbered binary blobs."""

    def __init__(self, owners: set[int]) -> None:
        self.blobs: list[bytes] = []
        self.owners = owners  # ids of objects saved at the top level (devices, vCPUs)

    def value(self, v: object, seen: set[int]) -> tuple[bool, object]:
        """(ok, encoded): ok False for a value that is not plain state."""
        if isinstance(v, _SCALARS):
            return True, v
        if isinstance(v, bytes | bytearray):
            kind = "ba" if isinstance(v, bytearray) else "b"
            if len(v) >= BLOB_MIN:
                self.blobs.append(bytes(v))
                return True, {kind: len(self.blobs) - 1, "blob": True}
            return True, {kind: base64.b64encode(v).decode()}
        if isinstance(v, list | tuple | set | frozenset | deque):
            items = []
            for item in v:
                ok, enc = self.value(item, seen)
                if not ok:
                    return False, None
                items.append(enc)
            if isinstance(v, list):
                return True, items
            tag = {tuple: "t", set: "s", frozenset: "s", deque: "dq"}[type(v)]
            out: dict[str, object] = {tag: items}
            if isinstance(v, deque):
                out["maxlen"] = v.maxlen
            return True, out
        if isinstance(v, dict):
            pairs = []
            for key, item in v.items():
                ok_k, k = self.value(key, seen)
                ok_v, enc = self.value(item, seen)
                if not (ok_k and ok_v):
                    return False, None
                pairs.append([k, enc])
            return True, {"d": pairs}
        if _nested(v) and id(v) not in self.owners and id(v) not in seen:
            return True, {"o": type(v).__qualname__, "f": self.fields(v, seen | {id(v)})}
        return False, None

    def fields(self, obj: object, seen: set[int]) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, v in vars(obj).items():
            ok, enc = self.value(v, seen)
            if ok:
                out[name] = enc
        return out

    def state(self, obj: object) -> dict[str, object]:
        saver = getattr(obj, "snapshot_state", None)
        if callable(saver):
            ok, enc = self.value(saver(), {id(obj)})
            if not ok:
                raise SnapshotError(f"{type(obj).__name__}: state is not plain data")
            return {"explicit": enc}
        return {"fields": self.fields(obj, {id(obj)})}


def _nested(v: object) -> bool:
    """A plain record of ours (a GIC bank, a virtqueue, a timer) whose fields are state."""
    return (
        dataclasses.is_dataclass(v)
        and not isinstance(v, type)
        and type(v).__module__.startswith("qemuser.system.")
    )


class _Decoder:
    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs

    def value(self, enc: object, current: object) -> object:
        if isinstance(enc, list):
            cur = current if isinstance(current, list) else []
            return [self.value(e, cur[i] if i < len(cur) else None) for i, e in enumerate(enc)]
        if not isinstance(enc, dict):
            return enc
        if "o" in enc:
            if current is None or type(current).__qualname__ != enc["o"]:
                raise SnapshotError(f"vmstate: {enc['o']} does not match this machine")
            self.fields(current, enc["f"])  # type: ignore[arg-type]
            return current
        for kind, cls in (("b", bytes), ("ba", bytearray)):
            if kind in enc:
                raw = (
                    self.blobs[enc[kind]]  # type: ignore[index]
                    if enc.get("blob")
                    else base64.b64decode(enc[kind])  # type: ignore[arg-type]
                )
                return cls(raw)
        if "t" in enc:
            cur = current if isinstance(current, tuple) else ()
            return tuple(
                self.value(e, cur[i] if i < len(cur) else None)
                for i, e in enumerate(enc["t"])  # type: ignore[arg-type]
            )
        if "s" in enc:
            return {self.value(e, None) for e in enc["s"]}  # type: ignore[attr-defined]
        if "dq" in enc:
            return deque((self.value(e, None) for e in enc["dq"]), enc["maxlen"])  # type: ignore
        if "d" in enc:
            cur = current if isinstance(current, dict) else {}
            out = {}
            for k, e in enc["d"]:  # type: ignore[attr-defined]
                key = self.value(k, None)
                out[key] = self.value(e, cur.get(key))  # type: ignore[arg-type]
            return out
        raise SnapshotError("vmstate: unknown value encoding")

    def fields(self, obj: object, saved: dict[str, object]) -> None:
        attrs = vars(obj)
        for name, enc in saved.items():
            if name in attrs:
                setattr(obj, name, self.value(enc, attrs[name]))

    def restore(self, obj: object, state: dict[str, object]) -> None:
        if "explicit" in state:
            obj.restore_state(self.value(state["explicit"], None))  # type: ignore[attr-defined]
        else:
            self.fields(obj, state["fields"])  # type: ignore[arg-type]


# --- the vmstate ------------------------------------------------------------------------------


def _identity(machine: Machine) -> dict[str, object]:
    cfg = machine.config
    return {
        "board": cfg.board.name,
        "arch": cfg.board.cpu.name,
        "cpu": cfg.board.cpu.model(cfg.cpu_model).name,
        "ram_base": cfg.board.ram_base,
        "ram_size": cfg.ram_size,
        "cpus": len(machine.cpus),
        "devices": [type(d).__qualname__ for d in machine.devices],
    }


def save_machine(machine: Machine, vm_clock_ns: int) -> bytes:
    """The machine's vmstate (it must be stopped between two slices)."""
    owners = {id(d) for d in machine.devices} | {id(c) for c in machine.cpus} | {id(machine)}
    enc = _Encoder(owners)
    doc = {
        "machine": _identity(machine),
        "vm_clock_ns": vm_clock_ns,
        "current_cpu": machine.current_cpu,
        "cpus": [enc.state(vcpu) for vcpu in machine.cpus],
        "devices": [enc.state(device) for device in machine.devices],
    }
    cfg = machine.config
    # one compressed stream, fed section by section (RAM in chunks: no copy of it all)
    z = zlib.compressobj(1)
    parts = [MAGIC, struct.pack(">I", VERSION)]
    body = json.dumps(doc, separators=(",", ":")).encode()
    parts.append(z.compress(_HEAD.pack(b"JSON", 0, len(body)) + body))
    for index, engine in enumerate(machine.engines):
        ctx = bytes(engine.context_save())
        parts.append(z.compress(_HEAD.pack(b"CPU\0", index, len(ctx)) + ctx))
    for index, blob in enumerate(enc.blobs):
        parts.append(z.compress(_HEAD.pack(b"BLOB", index, len(blob)) + blob))
    parts.append(z.compress(_HEAD.pack(b"RAM\0", 0, cfg.ram_size)))
    chunk = 16 << 20
    for at in range(0, cfg.ram_size, chunk):
        size = min(chunk, cfg.ram_size - at)
        parts.append(z.compress(machine.uc.mem_read(cfg.board.ram_base + at, size)))
    parts.append(z.flush())
    return b"".join(parts)


def state_limit(machine: Machine) -> int:
    """The most a vmstate of this machine can hold: its RAM, and room for flash banks and the
    rest (a crafted snapshot must not make us read or inflate gigabytes)."""
    return machine.config.ram_size + (1 << 30)


def _parse(data: bytes, limit: int) -> Parsed:
    if data[:4] == QEMU_MAGIC:
        raise SnapshotError("the vmstate was written by QEMU, which qemuser cannot load")
    if data[: len(MAGIC)] != MAGIC:
        raise SnapshotError("Not a migration stream")
    (version,) = struct.unpack_from(">I", data, len(MAGIC))
    if version != VERSION:
        raise SnapshotError(f"Unsupported migration stream version {version}")
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(data[len(MAGIC) + 4 :], limit + 1)
    except zlib.error:
        raise SnapshotError("vmstate: corrupt (decompression failed)") from None
    if len(raw) > limit:
        raise SnapshotError("vmstate: larger than this machine's state")
    view = memoryview(raw)  # sections are views: RAM is not copied again
    doc: dict[str, object] | None = None
    cpus: list[bytes] = []
    blobs: list[bytes] = []
    ram: bytes | memoryview = b""
    pos = 0
    while pos < len(raw):
        if pos + _HEAD.size > len(raw):
            raise SnapshotError("vmstate: truncated")
        tag, _index, length = _HEAD.unpack_from(raw, pos)
        pos += _HEAD.size
        body = view[pos : pos + length]
        if len(body) != length:
            raise SnapshotError("vmstate: truncated")
        pos += length
        if tag == b"JSON":
            try:
                doc = json.loads(bytes(body))
            except ValueError:
                raise SnapshotError("vmstate: corrupt machine description") from None
        elif tag == b"CPU\0":
            cpus.append(bytes(body))
        elif tag == b"BLOB":
            blobs.append(bytes(body))
        elif tag == b"RAM\0":
            ram = body
        else:
            raise SnapshotError(f"vmstate: unknown section {tag!r}")
    if not isinstance(doc, dict):
        raise SnapshotError("vmstate: no machine description")
    return doc, cpus, blobs, ram


def check_compatible(machine: Machine, saved: dict[str, object]) -> None:
    """Refuse a vmstate of another machine configuration (QEMU's words where it has them)."""
    here = _identity(machine)
    if saved.get("board") != here["board"] or saved.get("arch") != here["arch"]:
        raise SnapshotError(
            f"Machine type received is '{saved.get('board')}' and local is '{here['board']}'"
        )
    if saved.get("ram_size") != here["ram_size"] or saved.get("ram_base") != here["ram_base"]:
        raise SnapshotError(
            f"Length mismatch: mach-virt.ram: {saved.get('ram_size', 0):#x} in != "
            f"{here['ram_size']:#x}: Invalid argument"
        )
    if saved.get("cpu") != here["cpu"]:
        raise SnapshotError(
            f"CPU model received is '{saved.get('cpu')}' and local is '{here['cpu']}'"
        )
    if saved.get("cpus") != here["cpus"] or saved.get("devices") != here["devices"]:
        raise SnapshotError(
            "Make sure that your current VM setup matches your saved VM setup, including "
            "any hotplugged devices"
        )


def check_state(machine: Machine, parsed: Parsed) -> None:
    """Everything about a vmstate that can be checked before the first change to a machine."""
    doc, cpus, _blobs, ram = parsed
    saved = doc.get("machine")
    if not isinstance(saved, dict):
        raise SnapshotError("vmstate: no machine description")
    check_compatible(machine, saved)
    if len(cpus) != len(machine.engines) or len(ram) != machine.config.ram_size:
        raise SnapshotError("vmstate: truncated")
    for engine, ctx_bytes in zip(machine.engines, cpus, strict=True):
        if engine.context_save().size != len(ctx_bytes):
            raise SnapshotError("vmstate: CPU state of another unicorn build")


def restore_machine(machine: Machine, data: bytes | Parsed) -> int:
    """Put a vmstate onto a machine of the same configuration; returns the saved VM clock."""
    parsed = _parse(data, state_limit(machine)) if isinstance(data, bytes) else data
    check_state(machine, parsed)
    doc, cpus, blobs, ram = parsed
    cfg = machine.config
    dec = _Decoder(blobs)
    chunk = 16 << 20  # unicorn takes bytes: a copy of a chunk at a time
    for at in range(0, cfg.ram_size, chunk):
        machine.uc.mem_write(cfg.board.ram_base + at, bytes(ram[at : at + chunk]))
    for engine, ctx_bytes in zip(machine.engines, cpus, strict=True):
        ctx = UcContext.__new__(UcContext)
        ctx.__setstate__((ctx_bytes, len(ctx_bytes), engine.ctl_get_arch(), engine.ctl_get_mode()))
        engine.context_restore(ctx)
        # the code and the address space of the saved guest, not of the one that ran here:
        # translations and the TLB (which lives outside the context's CPU state) go
        engine.ctl_flush_tb()
        engine.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
    try:
        for vcpu, state in zip(machine.cpus, doc["cpus"], strict=True):  # type: ignore[call-overload]
            dec.restore(vcpu, state)
        for device, state in zip(machine.devices, doc["devices"], strict=True):  # type: ignore[call-overload]
            dec.restore(device, state)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise SnapshotError(f"vmstate: corrupt device state ({exc})") from None
    current = doc.get("current_cpu", 0)
    if isinstance(current, int) and 0 <= current < len(machine.engines):
        machine.current_cpu = current
        machine.uc = machine.engines[current]
    clock = doc.get("vm_clock_ns", 0)
    return clock if isinstance(clock, int) else 0


# --- snapshots on the machine's disks ---------------------------------------------------------


class VmSnapshots:
    """savevm/loadvm/delvm/info snapshots over the machine's drives, as QEMU's migration/
    savevm.c does them: every writable drive must be able to snapshot, the first qcow2 one
    keeps the vmstate."""

    def __init__(self, drives: Callable[[], list[Drive]]) -> None:
        self._drives = drives
        self._clock_base = 0  # VM clock at _clock_origin (a loaded snapshot's)
        self._clock_origin = time.monotonic_ns()

    def vm_clock_ns(self) -> int:
        return self._clock_base + time.monotonic_ns() - self._clock_origin

    def _writable(self) -> list[tuple[str, Qcow2Image | None]]:
        out = []
        for drive in self._drives():
            backend = drive.backend
            if backend is None or backend.read_only or backend.overlay is not None:
                continue  # read-only and -snapshot drives take no part (QEMU: not writable)
            driver = backend.driver
            out.append((drive.name, driver if isinstance(driver, Qcow2Image) else None))
        return out

    def _images(self) -> list[tuple[str, Qcow2Image]]:
        images = []
        for name, image in self._writable():
            if image is None:
                raise SnapshotError(f"Device '{name}' is writable but does not support snapshots")
            images.append((name, image))
        return images

    def _vmstate_image(self) -> Qcow2Image:
        images = self._images()
        if not images:
            raise SnapshotError("no block device can store vmstate for snapshot")
        return images[0][1]

    def save(self, machine: Machine, name: str | None) -> Snapshot:
        """savevm: the machine must be stopped (the session pauses it)."""
        images = self._images()
        vm_image = self._vmstate_image()
        if not name:
            name = time.strftime("vm-%Y%m%d%H%M%S", time.localtime())
        clock = self.vm_clock_ns()
        state = save_machine(machine, clock)
        try:
            for _name, image in images:  # QEMU replaces a snapshot of the same name (or id)
                while image.find_snapshot(name) is not None:
                    image.snapshot_delete(name)
            vm_image.write_vmstate(state)
            # QEMU without -icount records no instruction count (the ICOUNT column is empty)
            made = vm_image.snapshot_create(name, clock, len(state), icount=None)
            for _name, image in images:
                if image is not vm_image:
                    image.snapshot_create(name, clock, icount=None)
                image.flush()
        except BlockError as exc:
            raise SnapshotError(f"Error while creating snapshot on '{_name}': {exc}") from None
        return made

    def load(self, machine: Machine, name: str) -> None:
        """loadvm: disks rolled back, the machine state put back (the machine stopped)."""
        images = self._images()
        for _dname, image in images:
            if image.find_snapshot(name) is None:
                raise SnapshotError(f"Snapshot '{name}' does not exist in one or more devices")
        vm_image = self._vmstate_image()
        sn = vm_image.find_snapshot(name)
        assert sn is not None
        if not sn.vm_state_size:
            raise SnapshotError(
                "This is a disk-only snapshot. Revert to it  offline using qemu-img"
            )
        if sn.vm_state_size > state_limit(machine):
            raise SnapshotError("vmstate: larger than this machine's state")
        try:
            state = vm_image.read_snapshot_vmstate(sn)
        except BlockError as exc:
            raise SnapshotError(f"Error while loading VM state: {exc}") from None
        # refuse a foreign vmstate before anything changes
        parsed = _parse(state, state_limit(machine))
        check_state(machine, parsed)
        try:
            for _dname, image in images:
                image.snapshot_apply(name)
                image.flush()
        except BlockError as exc:
            raise SnapshotError(f"Could not load snapshot '{name}' on '{_dname}': {exc}") from None
        self._clock_base = restore_machine(machine, parsed)
        self._clock_origin = time.monotonic_ns()

    def delete(self, name: str) -> None:
        """delvm: QEMU says nothing when no drive holds the name."""
        try:
            images = self._images()
        except SnapshotError:
            return
        for dname, image in images:
            while image.find_snapshot(name) is not None:
                try:
                    image.snapshot_delete(name)
                    image.flush()
                except BlockError as exc:
                    raise SnapshotError(
                        f"Could not delete snapshot '{name}' on '{dname}': {exc}"
                    ) from None

    def info(self) -> str:
        """info snapshots, in QEMU's table."""
        try:
            vm_image = self._vmstate_image()
            images = self._images()
        except SnapshotError as exc:
            return f"{exc}\n"
        if not vm_image.snapshots:
            return "There is no snapshot available.\n"
        on_all = [sn for sn in vm_image.snapshots if all(_has(im, sn) for _n, im in images)]
        names = {sn.name for sn in on_all}
        lines = ["List of snapshots present on all disks:", snapshot_header()]
        lines += [snapshot_row(sn, "--") for sn in on_all]
        for dname, image in images:
            partial = [sn for sn in image.snapshots if sn.name not in names]
            if partial:
                lines.append("")
                lines.append(f"List of partial (non-loadable) snapshots on '{dname}':")
                lines.append(snapshot_header())
                lines += [snapshot_row(sn) for sn in partial]
        return "\n".join(lines) + "\n"


def _has(image: Qcow2Image, sn: Snapshot) -> bool:
    return any(s.name == sn.name for s in image.snapshots)


def snapshot_header() -> str:
    return "%-10s%-17s%8s%20s%13s%11s" % (  # noqa: UP031 (QEMU's printf format)
        "ID",
        "TAG",
        "VM SIZE",
        "DATE",
        "VM CLOCK",
        "ICOUNT",
    )


def snapshot_row(sn: Snapshot, ident: str | None = None) -> str:
    """One row as QEMU's bdrv_snapshot_dump prints it: its format differs from the header's
    (a space after the ID and after the tag columns), which shows with a tag of 17 or more
    characters, as savevm's made-up names are."""
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sn.date_sec))
    ns = sn.vm_clock_nsec
    secs = ns // 10**9
    clock = "%02d:%02d:%02d.%03d" % (  # noqa: UP031 (QEMU's printf format)
        secs // 3600,
        secs // 60 % 60,
        secs % 60,
        ns // 10**6 % 1000,
    )
    icount = "" if sn.icount is None else str(sn.icount)
    return "%-9s %-16s %8s%20s%13s%11s" % (  # noqa: UP031
        ident if ident is not None else sn.id,
        sn.name,
        size_to_str(sn.vm_state_size),
        date,
        clock,
        icount,
    )
