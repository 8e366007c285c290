"""ELF loading: program headers into the guest address space, as Linux's binfmt_elf does.

The headers are read with struct rather than pyelftools: loading needs only the ELF header and
the program headers, and importing pyelftools cost ~50 ms of every start (and of every exec).
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass
from typing import BinaryIO

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
    """A program that cannot be loaded; the message is one line for the user.

    `errno` is what Linux's execve returns for it. `fatal`: Linux finds this one only after
    the point of no return (the old image is already gone), so a guest's execve does not
    return: the caller dies of SIGSEGV instead."""

    def __init__(self, message: str, code: int = errno.ENOEXEC, fatal: bool = False) -> None:
        super().__init__(message)
        self.errno = code
        self.fatal = fatal


def _refused(path: str, code: int, why: str, fatal: bool = False) -> LoadError:
    """A LoadError in errno's own words (as qemu-user reports them), with the reason."""
    return LoadError(f"'{path}': {os.strerror(code)} ({why})", code, fatal)


# Linux reads at most PATH_MAX bytes of PT_INTERP (fs/binfmt_elf.c)
_PATH_MAX = 4096


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


def _open_exec(path: str, fd: int | None) -> BinaryIO:
    """The file opened as fs/exec.c's do_open_execat opens a program or an interpreter: a
    non-regular file (a FIFO, a device, a socket) is EACCES at once, before anything could
    block on it, and so is a file without execute permission or on a noexec mount.

    `fd` (binfmt_misc's open-binary flag): the kernel has already checked the file."""
    if fd is not None:
        return os.fdopen(os.dup(fd), "rb")
    try:
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer
        host_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LoadError(
            f"Could not open '{path}': No such file or directory", errno.ENOENT
        ) from None
    except IsADirectoryError:
        raise LoadError(f"Could not open '{path}': Is a directory", errno.EACCES) from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket: open(2) says ENXIO, execve EACCES
            raise _refused(path, errno.EACCES, "not a regular file") from None
        code = exc.errno or errno.EACCES
        raise LoadError(f"Could not open '{path}': {os.strerror(code)}", code) from None
    try:
        st = os.fstat(host_fd)
        if stat.S_ISDIR(st.st_mode):
            raise LoadError(f"Could not open '{path}': Is a directory", errno.EACCES)
        if not stat.S_ISREG(st.st_mode):
            raise _refused(path, errno.EACCES, "not a regular file")
        if os.fstatvfs(host_fd).f_flag & os.ST_NOEXEC:
            raise _refused(path, errno.EACCES, "on a noexec mount")
        # as the kernel's MAY_EXEC answers, for the effective ids, root included (any x bit)
        if not os.access(path, os.X_OK, effective_ids=True):
            raise _refused(path, errno.EACCES, "not executable")
        os.set_blocking(host_fd, True)
        return os.fdopen(host_fd, "rb")
    except BaseException:
        os.close(host_fd)
        raise


def read_elf_info(path: str, fd: int | None = None) -> ElfInfo:
    """Open `path` as execve would and parse its headers; LoadError (with execve's errno and a
    user-facing message) when Linux's binfmt_elf would refuse it before loading anything.

    What Linux checks only while it maps the segments (after its point of no return) is left
    to `load_image`."""
    stream = _open_exec(path, fd)
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
                if p_type == PT_INTERP and interp is None:
                    # binfmt_elf takes the first PT_INTERP and never looks at another
                    interp = _read_interp(path, stream, p_offset, p_filesz, size)
                elif p_type == PT_GNU_STACK:
                    exec_stack = bool(p_flags & PF_X)
        except (struct.error, ValueError, OSError, OverflowError):
            raise corrupt from None
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


def _read_interp(path: str, stream: BinaryIO, offset: int, filesz: int, size: int) -> bytes:
    """The PT_INTERP string, checked as binfmt_elf checks it (ENOEXEC, or EIO when the
    segment lies past the end of the file)."""
    if not 2 <= filesz <= _PATH_MAX:
        raise _refused(path, errno.ENOEXEC, "bad PT_INTERP size")
    if offset + filesz > size:
        raise _refused(path, errno.EIO, "PT_INTERP lies past the end of the file")
    stream.seek(offset)
    text = stream.read(filesz)
    if text[-1:] != b"\0":
        raise _refused(path, errno.ENOEXEC, "PT_INTERP is not NUL-terminated")
    # the kernel opens the string up to its first NUL
    return text.split(b"\0", 1)[0]


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


def _size_words(size: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size:#x} bytes"


def _commit_limit() -> int | None:
    """The largest private writable mapping the host's overcommit policy grants in one piece
    (mm/util.c __vm_enough_memory: with the heuristic, no more than RAM + swap), or None when
    it grants anything (vm.overcommit_memory=1). A guest kernel on this machine would refuse
    a bigger bss with ENOMEM, and backing it here would only fail later, page by page."""
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            if f.read().strip() == "1":
                return None
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return sum(int(fields[key].split()[0]) << 10 for key in ("MemTotal", "SwapTotal"))
    except (OSError, KeyError, ValueError):
        return None


def _check_segments(
    info: ElfInfo, loads: list[tuple[int, ...]], bias: int, page: int, size: int, task_size: int
) -> None:
    """What binfmt_elf's elf_load and the mmaps under it refuse, checked before anything is
    mapped: Linux meets these after its point of no return (hence `fatal`)."""
    path = info.path
    for _, offset, vaddr, filesz, memsz, flags, _align in loads:
        start = vaddr + bias
        if filesz > memsz:
            raise _refused(
                path, errno.EINVAL, "a segment's file size exceeds its memory size", True
            )
        if start >= task_size or memsz > task_size - start:
            where = f"the {_size_words(task_size)} user address space"
            raise _refused(path, errno.ENOMEM, f"a segment ends past {where}", True)
        if (vaddr - offset) % page or offset < start % page:
            raise LoadError(
                f"'{path}' has a segment whose file offset and address disagree", errno.EINVAL, True
            )
        if start & ~(page - 1) < MIN_MAP_ADDRESS:
            raise LoadError(
                f"'{path}' has a segment below the lowest mappable address", errno.EPERM, True
            )
        # (the policy is read only for segments above 1 GiB, not at every load)
        if flags & PF_W and memsz > 1 << 30 and memsz > (_commit_limit() or memsz):
            why = f"a writable segment of {_size_words(memsz)} exceeds the host's memory + swap"
            raise _refused(path, errno.ENOMEM, why, True)
        # padzero: the bss of a writable segment starts inside a page its file mapping
        # covers; when that page lies wholly past the end of the file, clearing it faults.
        bss_start = start + filesz
        if (
            flags & PF_W
            and 0 < filesz < memsz
            and bss_start % page
            and (offset + filesz) & ~(page - 1) >= size
        ):
            # (EFAULT: the usual way to meet this is a truncated copy of a program)
            raise LoadError(
                f"'{path}' is a truncated ELF file (a segment lies past its end)",
                errno.EFAULT,
                True,
            )


def load_image(
    mem: AddressSpace,
    info: ElfInfo,
    data: bytes,
    base_hint: int | None,
    name: str,
    *,
    task_size: int = ADDRESS_LIMIT,
) -> LoadedImage:
    """Map the PT_LOAD segments of `info` (file contents in `data`).

    ET_DYN is placed at `base_hint` (aligned to the largest segment alignment) or, when None,
    wherever mmap would place it; ET_EXEC at its own addresses. `task_size`: the end of the
    arch's user address space. As Linux, bytes a segment maps past the end of the file are
    not refused (they read as zero here: Linux would raise SIGBUS when they are touched).
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
                raise LoadError(
                    f"no room in the guest address space for '{info.path}'", errno.ENOMEM, True
                )
            start = (found + room - span) & ~(align - 1)
        else:
            start = (base_hint + align - 1) & ~(align - 1)
        bias = start - low
    _check_segments(info, loads, bias, page, len(data), task_size)
    st = os.stat(info.path) if os.path.exists(info.path) else None
    for _, offset, vaddr, filesz, memsz, flags, _align in loads:
        seg_start = (vaddr + bias) & ~(page - 1)
        seg_end = mem.page_align(vaddr + bias + memsz)
        file_page_off = offset - ((vaddr + bias) - seg_start)
        # As binfmt_elf does, each segment is mapped whole-page from the file over whatever an
        # earlier segment left in a shared first page (MAP_FIXED): that page takes this
        # segment's protection and the file's bytes at this segment's page-aligned offset.
        if memsz > filesz:
            # bss: zero from the end of the file bytes on, the rest of that page included
            file_end = offset + filesz
        else:
            # no bss: the last page shows the bytes that follow in the file, as a file mapping
            file_end = file_page_off + (mem.page_align(vaddr + bias + filesz) - seg_start)
        # A segment with no file bytes is bss alone: anonymous memory (vm_brk), whatever its
        # p_offset says (it may lie past the end of the file), shown with no file name.
        from_file = filesz > 0
        try:
            mem.map(
                seg_start,
                seg_end - seg_start,
                _prot(flags),
                name if from_file else "",
                offset=file_page_off if from_file else 0,
                device=st.st_dev if st and from_file else 0,
                inode=st.st_ino if st and from_file else 0,
            )
            if from_file:
                mem.write_init(seg_start, data[file_page_off : min(file_end, len(data))])
        except OSError:
            raise LoadError(
                f"'{info.path}' needs more memory than the host gives", errno.ENOMEM, True
            ) from None
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
