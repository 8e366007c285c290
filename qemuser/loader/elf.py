"""ELF loading: program headers into the guest address space, as Linux's binfmt_elf does.

The headers are read with struct rather than pyelftools: loading needs only the ELF header and
the program headers, and importing pyelftools cost ~50 ms of every start (and of every exec).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from qemuser.cpu import CPUS, CpuSpec, mark_unwritable_code, spec_for_machine
from qemuser.loader.memory import (
    MIN_MAP_ADDRESS,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    AddressSpace,
)

# p_type values (include/uapi/linux/elf.h)
PT_LOAD = 1
PT_INTERP = 3
PT_PHDR = 6
PT_GNU_STACK = 0x6474E551
PF_X = 1
PF_W = 2

# e_type names as binfmt_elf's messages and the loader use them (include/uapi/linux/elf.h)
_ELF_TYPES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}

ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2


# eq=False: these are compared by identity, and every start would compile the generated
# __eq__/__hash__ (dataclass methods are compiled at import, ~0.3 ms each).
@dataclass(frozen=True, eq=False)
class _ElfLayout:
    """Where the fields this loader reads sit, per ELF class (include/uapi/linux/elf.h:
    Elf32_Ehdr/Elf64_Ehdr after e_ident, Elf32_Phdr/Elf64_Phdr)."""

    bits: int
    # e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize,
    # e_phnum, e_shentsize, e_shnum, e_shstrndx
    header: str
    header_size: int
    phdr: str
    phdr_size: int
    # indexes of p_type, p_offset, p_vaddr, p_filesz, p_memsz, p_flags, p_align in `phdr`
    phdr_fields: tuple[int, int, int, int, int, int, int]


_LAYOUTS = {
    ELFCLASS64: _ElfLayout(64, "HHIQQQIHHHHHH", 64, "IIQQQQQQ", 56, (0, 2, 3, 5, 6, 1, 7)),
    ELFCLASS32: _ElfLayout(32, "HHIIIIIHHHHHH", 52, "IIIIIIII", 32, (0, 1, 2, 4, 5, 6, 7)),
}

_MACHINE_NAMES = {
    3: "x86 (i386)",
    62: "x86-64",
    40: "ARM (32-bit)",
    183: "AArch64",
    243: "RISC-V",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC64",
    22: "S/390",
}


# No 64-bit Linux user space reaches past 48 bits of address (arm64 and riscv Sv48 alike).
ADDRESS_LIMIT = 1 << 48


class LoadError(Exception):
    """A program that cannot be loaded; the message is one line for the user."""


# Not frozen, unlike the specs: nothing assigns to it once built, and a frozen dataclass
# compiles a __setattr__, a __delattr__ and a slower __init__ at every start (~2% of a hello).
@dataclass(eq=False)
class ElfInfo:
    """What the loader needs to know of an ELF file before placing it."""

    path: str
    machine: int
    elf_class: int
    little_endian: bool
    etype: str  # ET_EXEC or ET_DYN
    entry: int
    phoff: int
    phentsize: int
    phnum: int
    segments: tuple[tuple[int, int, int, int, int, int, int], ...]
    # (type, offset, vaddr, filesz, memsz, flags, align)
    interp: bytes | None
    exec_stack: bool


@dataclass(eq=False)  # not frozen: see ElfInfo
class LoadedImage:
    """An ELF file placed in guest memory."""

    info: ElfInfo
    base: int  # load bias (0 for ET_EXEC)
    entry: int  # biased entry point
    phdr: int  # guest address of the program headers
    end: int  # highest mapped address (page aligned): brk starts here
    low: int


def read_elf_info(path: str, fd: int | None = None) -> ElfInfo:
    """Parse headers; raise LoadError with a user-facing message when it is not a usable ELF."""
    try:
        stream = os.fdopen(os.dup(fd), "rb") if fd is not None else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise LoadError(f"Could not open '{path}': No such file or directory") from None
    except IsADirectoryError:
        raise LoadError(f"Could not open '{path}': Is a directory") from None
    except PermissionError:
        raise LoadError(f"Could not open '{path}': Permission denied") from None
    except OSError as exc:
        raise LoadError(f"Could not open '{path}': {exc.strerror}") from None
    with stream:
        stream.seek(0)
        head = stream.read(64)
        size = os.fstat(stream.fileno()).st_size
        if len(head) < 4 or head[:4] != b"\x7fELF":
            raise LoadError(f"'{path}' is not an ELF executable")
        if len(head) < 16:
            raise LoadError(f"'{path}' is a truncated ELF file")
        corrupt = LoadError(f"'{path}' is a truncated or corrupt ELF file")
        layout = _LAYOUTS.get(head[4])
        if layout is None or head[5] not in (ELFDATA2LSB, ELFDATA2MSB):
            raise corrupt
        little_endian = head[5] == ELFDATA2LSB
        order = "<" if little_endian else ">"
        if len(head) < layout.header_size:
            raise corrupt
        (e_type, e_machine, _version, e_entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize,
         e_phnum, *_) = struct.unpack_from(order + layout.header, head, 16)  # fmt: skip
        # What binfmt_elf checks before it trusts the program headers (ENOEXEC).
        if e_phentsize != layout.phdr_size or not 0 < e_phnum <= 65536 // layout.phdr_size:
            raise corrupt
        if e_phoff + layout.phdr_size * e_phnum > size:
            raise LoadError(f"'{path}' is a truncated ELF file")
        try:
            stream.seek(e_phoff)
            table = stream.read(layout.phdr_size * e_phnum)
            segments = []
            interp = None
            exec_stack = False
            kind, offset, vaddr, filesz, memsz, flags, align = layout.phdr_fields
            for fields in struct.iter_unpack(order + layout.phdr, table):
                segment = (
                    fields[kind], fields[offset], fields[vaddr], fields[filesz], fields[memsz],
                    fields[flags], fields[align],
                )  # fmt: skip
                segments.append(segment)
                p_type, p_offset, _, p_filesz, _, p_flags, _ = segment
                if p_type == PT_INTERP:
                    if not 2 <= p_filesz <= 4096 or p_offset + p_filesz > size:
                        raise corrupt
                    stream.seek(p_offset)
                    interp = stream.read(p_filesz).split(b"\0")[0]
                elif p_type == PT_GNU_STACK:
                    exec_stack = bool(p_flags & PF_X)
        except (struct.error, ValueError, OSError, OverflowError):
            raise corrupt from None
    for seg in segments:
        if seg[0] == PT_LOAD and seg[1] + seg[3] > size:
            raise LoadError(f"'{path}' is a truncated ELF file (a segment lies past its end)")
        if seg[0] == PT_LOAD and (seg[3] > seg[4] or seg[2] + seg[4] >= 1 << 64):
            raise corrupt
    etype = _ELF_TYPES.get(e_type, str(e_type))
    if etype not in ("ET_EXEC", "ET_DYN"):
        raise LoadError(f"'{path}' is not an executable ELF file ({etype})")
    return ElfInfo(
        path=path,
        machine=e_machine,
        elf_class=layout.bits,
        little_endian=little_endian,
        etype=etype,
        entry=e_entry,
        phoff=e_phoff,
        phentsize=e_phentsize,
        phnum=e_phnum,
        segments=tuple(segments),
        interp=interp,
        exec_stack=exec_stack,
    )


def check_arch(info: ElfInfo, spec: CpuSpec) -> None:
    """LoadError naming the qemuser that would run it, when the ELF is for another machine."""
    usable = info.elf_class == 64 and info.little_endian
    if info.machine == spec.elf_machine and usable:
        return
    what = _MACHINE_NAMES.get(info.machine, f"machine {info.machine}")
    if info.elf_class != 64 and "32-bit" not in what:
        what += " (32-bit)"
    if not info.little_endian:
        what += " (big-endian)"
    other = spec_for_machine(info.machine) if usable else None
    hint = f"; run it with qemuser-{other.name}" if other and other is not spec else ""
    raise LoadError(f"'{info.path}' is built for {what}, not {spec.name}{hint}")


def _prot(p_flags: int) -> int:
    return (
        (PROT_READ if p_flags & 4 else 0)
        | (PROT_WRITE if p_flags & 2 else 0)
        | (PROT_EXEC if p_flags & 1 else 0)
    )


def load_image(
    mem: AddressSpace, info: ElfInfo, data: bytes, base_hint: int | None, name: str
) -> LoadedImage:
    """Map the PT_LOAD segments of `info` (file contents in `data`).

    ET_DYN is placed at `base_hint` (aligned to the largest segment alignment) or, when None,
    wherever mmap would place it; ET_EXEC at its own addresses.
    """
    page = mem.page_size
    loads = [s for s in info.segments if s[0] == PT_LOAD]
    if not loads:
        raise LoadError(f"'{info.path}' has no loadable segments")
    low = min(s[2] for s in loads) & ~(page - 1)
    high = mem.page_align(max(s[2] + s[4] for s in loads))
    bias = 0
    if info.etype == "ET_DYN":
        align = max([page] + [s[6] for s in loads if s[6] and (s[6] & (s[6] - 1)) == 0])
        span = high - low
        if base_hint is None:
            # Top-down like mmap: the highest free range that holds the image at its
            # alignment, aligned downwards so that no gap is left above it.
            room = span + align - page
            found = mem.find_free(room)
            if found is None:
                raise LoadError(f"no room in the guest address space for '{info.path}'")
            start = (found + room - span) & ~(align - 1)
        else:
            start = (base_hint + align - 1) & ~(align - 1)
        bias = start - low
    st = os.stat(info.path) if os.path.exists(info.path) else None
    for _, offset, vaddr, filesz, memsz, flags, _align in loads:
        seg_start = (vaddr + bias) & ~(page - 1)
        seg_end = mem.page_align(vaddr + bias + memsz)
        file_page_off = offset - ((vaddr + bias) - seg_start)
        if (vaddr - offset) % page or file_page_off < 0:
            raise LoadError(f"'{info.path}' has a segment whose file offset and address disagree")
        if seg_start < MIN_MAP_ADDRESS or seg_end > ADDRESS_LIMIT:
            raise LoadError(f"'{info.path}' has a segment outside the guest address space")
        # As binfmt_elf does, each segment is mapped whole-page from the file over whatever an
        # earlier segment left in a shared first page (MAP_FIXED): that page takes this
        # segment's protection and the file's bytes at this segment's page-aligned offset.
        if memsz > filesz:
            # bss: zero from the end of the file bytes on, the rest of that page included
            file_end = offset + filesz
        else:
            # no bss: the last page shows the bytes that follow in the file, as a file mapping
            file_end = file_page_off + (mem.page_align(vaddr + bias + filesz) - seg_start)
        try:
            mem.map(
                seg_start,
                seg_end - seg_start,
                _prot(flags),
                name,
                offset=file_page_off,
                device=st.st_dev if st else 0,
                inode=st.st_ino if st else 0,
            )
            mem.write_init(seg_start, data[file_page_off : min(file_end, len(data))])
        except OSError:
            raise LoadError(f"'{info.path}' needs more memory than the host gives") from None
        if flags & PF_X and not flags & PF_W:
            mark_unwritable_code(mem.uc, seg_start, seg_end)
    phdr = 0
    for seg in info.segments:
        if seg[0] == PT_PHDR:
            phdr = seg[2] + bias
    if not phdr:
        for _, offset, vaddr, filesz, *_ in loads:
            if offset <= info.phoff < offset + filesz:
                phdr = vaddr + bias + (info.phoff - offset)
    return LoadedImage(
        info=info,
        base=bias,
        entry=(info.entry + bias) & 0xFFFF_FFFF_FFFF_FFFF,
        phdr=phdr,
        end=high + bias,
        low=low + bias,
    )


def arch_of_file(path: str) -> str | None:
    """The qemuser arch name that runs this ELF, or None (not ELF, or no such arch)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return None
    machine = struct.unpack_from("<H", head, 18)[0]
    for spec in CPUS.values():
        if spec.elf_machine == machine:
            return spec.name
    return None
