"""/proc files that describe the guest itself rather than the emulator."""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from qemuser.syscalls.mm import host_pieces
from qemuser.user.linux import cpuinfo

if TYPE_CHECKING:
    from qemuser.loader.memory import Mapping
    from qemuser.user.runtime import RuntimeProcess


def _self_prefixes(proc: RuntimeProcess) -> tuple[bytes, ...]:
    return (b"/proc/self/", f"/proc/{proc.pid}/".encode(), b"/proc/thread-self/")


def synthetic_file(proc: RuntimeProcess, path: bytes) -> bytes | None:
    path = os.path.normpath(path) if path.startswith(b"/proc/") else path
    if path == b"/proc/cpuinfo":
        return cpuinfo(proc.spec, proc.uc, proc.model.name).encode()
    for prefix in _self_prefixes(proc):
        if path.startswith(prefix):
            name = path[len(prefix) :]
            maker = _SELF_FILES.get(name)
            return maker(proc) if maker else None
    return None


def maps(proc: RuntimeProcess) -> bytes:
    lines = []
    for m in proc.mem.mappings():
        perms = (
            ("r" if m.prot & 1 else "-")
            + ("w" if m.prot & 2 else "-")
            + ("x" if m.prot & 4 else "-")
            + ("s" if m.shared else "p")
        )
        dev = f"{os.major(m.device):02x}:{os.minor(m.device):02x}"
        head = f"{m.start:08x}-{m.end:08x} {perms} {m.offset:08x} {dev} {m.inode}"
        lines.append(f"{head:<72} {m.name}".rstrip() if m.name else head)
    return ("\n".join(lines) + "\n").encode()


def _host_locked_ranges() -> list[tuple[int, int]]:
    """The host mappings of this process that are locked (VmFlags "lo" in the host's smaps):
    the guest's mlock()s are the host's, on the host pages behind the guest's (syscalls/mm.py)."""
    locked = []
    start = end = 0
    with open(f"/proc/{os.getpid()}/smaps", "rb") as f:
        for line in f:
            if line[:1] in b"0123456789abcdef":  # a mapping's first line; fields are capitalised
                low, _, high = line.split(b" ", 1)[0].partition(b"-")
                start, end = int(low, 16), int(high, 16)
            elif line.startswith(b"VmFlags:") and b" lo" in line:
                locked.append((start, end))
    return locked


def _locked_bytes(proc: RuntimeProcess, m: Mapping, locked: list[tuple[int, int]]) -> int:
    total = 0
    for _, host, length in host_pieces(proc.mem, m.start, m.end):
        for low, high in locked:
            total += max(0, min(high, host + length) - max(low, host))
    return total


def smaps(proc: RuntimeProcess) -> bytes:
    out = []
    locked = _host_locked_ranges()
    for line, m in zip(maps(proc).decode().splitlines(), proc.mem.mappings()):
        kb = m.size // 1024
        locked_kb = _locked_bytes(proc, m, locked) // 1024 if locked else 0
        out.append(line)
        out.append(f"Size:           {kb:>8} kB")
        out.append(f"Rss:            {kb:>8} kB")
        out.append("Swap:                  0 kB")
        out.append(f"Locked:         {locked_kb:>8} kB")
        out.append(
            f"VmFlags: {'rd ' if m.prot & 1 else ''}{'wr ' if m.prot & 2 else ''}"
            f"{'ex ' if m.prot & 4 else ''}{'lo ' if locked_kb else ''}".rstrip()
        )
    return ("\n".join(out) + "\n").encode()


def cmdline(proc: RuntimeProcess) -> bytes:
    return b"".join(a + b"\0" for a in proc.config.argv)


def environ(proc: RuntimeProcess) -> bytes:
    return b"".join(e + b"\0" for e in proc.config.env)


def auxv(proc: RuntimeProcess) -> bytes:
    assert proc.stack is not None
    return b"".join(struct.pack("<QQ", k, v) for k, v in proc.stack.auxv)


def _guest_comm(proc: RuntimeProcess) -> bytes:
    return proc.thread_name or os.path.basename(os.fsencode(proc.exe_path))[:15]


def stat(proc: RuntimeProcess) -> bytes:
    """The host's line for this process, with the guest's name and its own code/stack addresses
    (fields 26-28: startcode, endcode, startstack)."""
    with open(f"/proc/{os.getpid()}/stat", "rb") as f:
        line = f.read()
    head, _, tail = line.rpartition(b") ")
    pid = head.split(b" (", 1)[0]
    fields = tail.split(b" ")
    image = proc.image
    if image is not None and len(fields) > 25:
        fields[22] = str(image.low).encode()  # startcode (field 26 overall)
        fields[23] = str(image.end).encode()  # endcode
        fields[24] = str(proc.stack.sp if proc.stack else 0).encode()  # startstack
    return pid + b" (" + _guest_comm(proc) + b") " + b" ".join(fields)


def status(proc: RuntimeProcess) -> bytes:
    with open(f"/proc/{os.getpid()}/status", "rb") as f:
        lines = f.read().splitlines(keepends=True)
    out = []
    for line in lines:
        if line.startswith(b"Name:"):
            line = b"Name:\t" + _guest_comm(proc) + b"\n"
        out.append(line)
    return b"".join(out)


def comm(proc: RuntimeProcess) -> bytes:
    return _guest_comm(proc) + b"\n"


_SELF_FILES = {
    b"comm": comm,
    b"stat": stat,
    b"status": status,
    b"maps": maps,
    b"smaps": smaps,
    b"cmdline": cmdline,
    b"environ": environ,
    b"auxv": auxv,
}
