"""The guest's address space: Linux-like mappings on top of unicorn's memory.

Guest virtual addresses are identity-mapped onto unicorn's physical memory, and unicorn runs in
its "virtual TLB" mode: every TLB miss asks `_tlb_fill` for the page's own protection. That is
what lets PROT_NONE, read-only and no-exec pages behave as on Linux, and it keeps data pages
non-executable, which avoids unicorn's slow self-modifying-code path on every store
(shared/UNICORN-NOTES.md: 6-8x faster stores).

Every guest page unicorn sees is host memory we mapped ourselves and lent to it with
`mem_map_ptr` (private mappings: anonymous MAP_PRIVATE host pages, which a host fork copies;
shared ones: MAP_SHARED host pages, which stay shared). So a guest buffer is also a host
pointer, and read()/write() move data between a host fd and guest memory with no Python copy
(`host_span`). unicorn still drops translated code only for stores it sees itself, so bytes
bound for executable pages go through `uc.mem_write`, and making pages executable drops
whatever was translated from them before.
"""

from __future__ import annotations

import bisect
import ctypes
import dataclasses
import errno
import os
import sys
import weakref
from dataclasses import dataclass, field

from unicorn import UC_HOOK_TLB_FILL, UC_MEM_FETCH, UC_MEM_WRITE, UC_PROT_ALL, Uc, UcError
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_TLB_VIRTUAL

from qemuser.host.libc import LIBC
from qemuser.loader.fault import GuestFault  # kept apart from unicorn (fault.py)

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4

# emu_start() needs an address the guest never reaches to stop at, and unicorn probes the page
# below it when it stops; both pages are backed by physical page 0 (never guest memory, since
# Linux refuses to map below mmap_min_addr = 64 KiB).
STOP_ADDRESS = 0xFFFF_FFFF_FFFF_F000
_STOP_PAGES_START = STOP_ADDRESS - 0x1000
MIN_MAP_ADDRESS = 0x10000


# The host's libc, with the prototypes of the memory calls (qemuser.host.libc).
_libc = LIBC
_HOST_PROT_READ_WRITE = 3
_HOST_MAP_PRIVATE_ANONYMOUS_NORESERVE = 0x02 | 0x20 | 0x4000  # x86_64 host values


_HOST_MREMAP_MAYMOVE = 1
_HOST_MAP_FAILED = ctypes.c_void_p(-1).value


def _host_munmap(address: int, size: int) -> None:
    _libc.munmap(ctypes.c_void_p(address), size)


def host_private_pages(size: int) -> int:
    """Fresh zeroed host pages for a private guest mapping (reserved lazily, as Linux does)."""
    address = _libc.mmap(
        None, size, _HOST_PROT_READ_WRITE, _HOST_MAP_PRIVATE_ANONYMOUS_NORESERVE, -1, 0
    )
    if address is None or address == _HOST_MAP_FAILED:
        raise OSError(errno.ENOMEM, "the host cannot back this mapping")
    return address


def _host_mremap(address: int, old_size: int, new_size: int) -> int:
    """Resize (and maybe move) a host mapping; OSError when the host refuses."""
    moved = _libc.mremap(ctypes.c_void_p(address), old_size, new_size, _HOST_MREMAP_MAYMOVE)
    if moved is None or moved == _HOST_MAP_FAILED:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return moved


class _TlbEntry(ctypes.Structure):
    """uc_tlb_entry (unicorn's include/unicorn/unicorn.h): what a TLB-fill hook returns."""

    _fields_ = [("paddr", ctypes.c_uint64), ("perms", ctypes.c_uint32)]


# uc_cb_tlbevent_t: bool (uc_engine *, uint64_t vaddr, uc_mem_type, uc_tlb_entry *, void *)
_TLB_FILL_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p
)


def add_raw_hook(uc: Uc, hook_type: int, function: ctypes._CFuncPtr) -> None:
    """uc_hook_add of a ctypes function, for every address, without the binding's two
    wrapper layers (they cost microseconds on the hottest hooks: system calls, TLB fills).

    The function must not raise (ctypes would only print the exception) and must be kept
    alive as long as the engine."""
    from unicorn.unicorn_py3.unicorn import uclib

    handle = ctypes.c_size_t()
    status = uclib.uc_hook_add(
        uc._uch,  # the engine handle the binding itself passes to C
        ctypes.byref(handle),
        hook_type,
        function,
        ctypes.c_void_p(0),
        ctypes.c_uint64(1),  # begin > end: every address
        ctypes.c_uint64(0),
    )
    if status:
        raise UcError(status)


def effective_prot(prot: int) -> int:
    """What the page tables allow for a mapping's PROT_* bits: on arm64 and riscv a writable
    page is readable too (riscv's page tables have no write-only encoding; arm64 maps
    PROT_WRITE as read-write), though /proc/self/maps still shows what was asked."""
    return prot | PROT_READ if prot & PROT_WRITE else prot


# eq=False: compared by identity only; every start would compile the generated __eq__. The
# records here are not frozen either: a frozen dataclass compiles a __setattr__, a __delattr__
# and a slower __init__ at every start, and nothing assigns to a LastFault once built.
@dataclass(eq=False)
class Mapping:
    """One guest mapping, as /proc/self/maps shows it."""

    start: int
    end: int
    prot: int
    name: str = ""  # file path, "[heap]", "[stack]", or "" for anonymous
    offset: int = 0  # file offset of `start` for file mappings
    shared: bool = False
    host_address: int | None = field(default=None, repr=False)  # MAP_SHARED host backing
    device: int = 0
    inode: int = 0
    # Linux's VM_MAYWRITE: False for a shared mapping of a file opened read-only, which
    # mprotect may never make writable (its host pages are read-only too).
    may_write: bool = True
    # Whether unicorn has memory behind it. A private PROT_NONE mapping gets none until it
    # first becomes accessible: programs reserve address space that way (tens of GiB, more
    # than the host would lend in one piece), and untouched it reads as zero anyway.
    backed: bool = True
    # A file mapping's guest address where the file's pages end (page aligned): the pages from
    # there on lie wholly past end-of-file, and touching them is SIGBUS (BUS_ADRERR) on Linux,
    # not zeros (a shared mapping's host pages there would raise the host's SIGBUS in the
    # emulator). None: no file, or one with no size (a device). Rechecked when touched, since
    # the file may have grown since (`AddressSpace._past_file_end`).
    file_end: int | None = None

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(eq=False)
class HostPages:
    """Host memory lent to unicorn for guest [start, end): guest address a is host address
    host + (a - start). One record per `mem_map_ptr` call, cut as the guest unmaps parts."""

    start: int
    end: int
    host: int
    owned: bool  # private pages, released with the guest range; shared ones belong to a Mapping


def _release_host_pages(table: list[HostPages]) -> None:
    for pages in table:
        if pages.owned:
            _host_munmap(pages.host, pages.end - pages.start)
    table.clear()


@dataclass(eq=False)  # not frozen: see the note above Mapping
class LastFault:
    """The guest access that faulted last: what a SIGSEGV's siginfo reports."""

    address: int
    access: int
    mapped: bool
    past_file_end: bool = False  # a file page past end-of-file: SIGBUS, BUS_ADRERR


def file_end_of(start: int, offset: int, file_size: int, page_size: int) -> int:
    """The guest address where a mapping of a file of `file_size` bytes at `offset`, placed at
    `start`, stops having file pages (`Mapping.file_end`)."""
    length = max(0, file_size - offset)
    return start + (length + page_size - 1) // page_size * page_size


def _current_size(path: str, device: int, inode: int) -> int | None:
    """The size of the file (device, inode), named `path` when it was mapped; None if gone."""
    candidates = [path] if path.startswith("/") else []
    try:
        candidates += [f"/proc/self/fd/{name}" for name in os.listdir("/proc/self/fd")]
    except OSError:
        pass
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except (OSError, ValueError):
            continue
        if (st.st_dev, st.st_ino) == (device, inode):
            return st.st_size
    return None


class AddressSpace:
    """Mappings with exact page protections; reads and writes that fault as the kernel would."""

    def __init__(self, uc: Uc, page_size: int, mmap_top: int, mmap_bottom: int = 0x1000_0000):
        self.uc = uc
        self.page_size = page_size
        self.mmap_top = mmap_top
        self.mmap_bottom = mmap_bottom
        self._maps: list[Mapping] = []
        self._starts: list[int] = []
        self.last_fault: LastFault | None = None
        self.brk_start = 0
        self.brk = 0
        # unicorn's own mem_map/mem_unmap translate the range through the TLB (to drop
        # translated code); those lookups must succeed whatever the guest's protections.
        self._inside_unicorn_call = False
        self._lent_page: int | None = None  # a page the fault replay may touch
        self._host_pages: list[HostPages] = []
        self._host_pages_starts: list[int] = []
        self._recent_pages: HostPages | None = None  # the last hit: buffers are reused
        # (start, end, host - guest, fillable) of the last `host_span` hit: guest memory the
        # guest may read (and fill, when fillable) in one host piece; None after any change
        self._recent_span: tuple[int, int, int, bool] | None = None
        # an exec'd program leaves this address space behind: give its pages back with it
        weakref.finalize(self, _release_host_pages, self._host_pages).atexit = False
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        uc.mem_map(0, page_size, UC_PROT_ALL)
        self._tlb_fill_function = _TLB_FILL_CALLBACK(self._tlb_fill)  # alive with the engine
        add_raw_hook(uc, UC_HOOK_TLB_FILL, self._tlb_fill_function)

    # ---- lookups ---------------------------------------------------------------------------

    def mappings(self) -> list[Mapping]:
        return list(self._maps)

    def find(self, address: int) -> Mapping | None:
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            m = self._maps[i]
            if address < m.end:
                return m
        return None

    def is_free(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._starts, end)
        return i == 0 or self._maps[i - 1].end <= start

    def page_align(self, value: int) -> int:
        return (value + self.page_size - 1) & ~(self.page_size - 1)

    def find_free(self, length: int, hint: int = 0) -> int | None:
        """A free range of `length` bytes: at the hint if free, else top-down below mmap_top."""
        if hint and hint >= MIN_MAP_ADDRESS:
            hint = hint & ~(self.page_size - 1)
            if hint + length <= self.mmap_top and self.is_free(hint, hint + length):
                return hint
        top = self.mmap_top
        i = bisect.bisect_left(self._starts, top)
        # walk the gaps downwards from the top
        while True:
            below_end = self._maps[i - 1].end if i > 0 else self.mmap_bottom
            gap_start = max(below_end, self.mmap_bottom)
            if top - gap_start >= length:
                return top - length
            if i == 0:
                return None
            i -= 1
            top = min(top, self._maps[i].start)

    # ---- the TLB -----------------------------------------------------------------------------

    def _tlb_fill(self, _handle: int, vaddr: int, access: int, entry: int, _data: int) -> bool:
        """unicorn's TLB miss (a raw ctypes hook: it runs for every page a program touches,
        again after each flush): fill the uc_tlb_entry at `entry`, or refuse (a fault)."""
        try:
            translation = self._translate(vaddr, access)
        except Exception as exc:  # a bug of ours: one line, and the guest sees a fault
            sys.stderr.write(f"qemuser: internal error in the TLB fill: {exc!r}\n")
            return False
        if translation is None:
            return False
        paddr, perms = translation
        filled = _TlbEntry.from_address(entry)
        filled.paddr = paddr
        filled.perms = perms
        return True

    def _translate(self, vaddr: int, access: int) -> tuple[int, int] | None:
        """(physical page, unicorn permissions) for a TLB miss; None for a fault."""
        page = vaddr & ~(self.page_size - 1)
        if page == self._lent_page or self._inside_unicorn_call:
            # identity, so that unicorn drops the code translated from this very page
            return page, UC_PROT_ALL
        if page >= _STOP_PAGES_START:
            return 0, UC_PROT_ALL
        m = self.find(vaddr)
        if m is None:
            self.last_fault = LastFault(vaddr, access, False)
            return None
        needed = (
            PROT_EXEC
            if access == UC_MEM_FETCH
            else PROT_WRITE
            if access == UC_MEM_WRITE
            else PROT_READ
        )
        allowed = effective_prot(m.prot)
        if not allowed & needed:
            self.last_fault = LastFault(vaddr, access, True)
            return None
        if m.file_end is not None and page >= m.file_end and self._past_file_end(m, page):
            self.last_fault = LastFault(vaddr, access, True, past_file_end=True)
            return None
        return page, allowed

    def _past_file_end(self, m: Mapping, page: int) -> bool:
        """Whether `page` of file mapping `m` (at or past its recorded file end) still lies
        past the end of the file, which may have grown since (ftruncate, write). The file is
        found again by its path, else (deleted, a memfd) among this process's open fds, by
        device and inode; one found nowhere keeps the recorded end. A rare path: only a
        touch past the recorded end comes here."""
        size = _current_size(m.name, m.device, m.inode)
        if size is None:
            return True
        m.file_end = file_end_of(m.start, m.offset, size, self.page_size)
        return page >= m.file_end

    def lend_page(self, page: int) -> tuple[bool, bytes, int | None]:
        """Make one guest page accessible to the CPU for a moment (fault replay); returns what
        `return_page` needs to put things back."""
        # page 0 is always backed (the stop page); others only when the guest mapped them
        m = self.find(page)
        mapped = (m is not None and m.backed) or page == 0
        if mapped and m is not None and m.file_end is not None and page >= m.file_end:
            # past the file's end: its host pages would raise the host's SIGBUS if read
            saved = bytes(self.page_size)
        else:
            saved = bytes(self.uc.mem_read(page, self.page_size)) if mapped else b""
        # A shared page's host memory may be read-only (a file opened O_RDONLY, SHM_RDONLY),
        # and other processes see it: the replay gets a private copy in its place.
        shared_host = None
        if m is not None and m.backed and m.host_address is not None:
            shared_host = m.host_address + (page - m.start)
        if not mapped or shared_host is not None:
            self._inside_unicorn_call = True
            try:
                if shared_host is not None:
                    self.uc.mem_unmap(page, self.page_size)
                self.uc.mem_map(page, self.page_size, UC_PROT_ALL)
                if shared_host is not None:
                    self.uc.mem_write(page, saved)
            finally:
                self._inside_unicorn_call = False
        self._lent_page = page
        self.flush_tlb()
        return mapped, saved, shared_host

    def return_page(self, page: int, state: tuple[bool, bytes, int | None]) -> None:
        mapped, saved, shared_host = state
        self._lent_page = None
        if mapped and shared_host is None:
            self.uc.mem_write(page, saved)
        else:
            self._inside_unicorn_call = True
            try:
                self.uc.mem_unmap(page, self.page_size)
                if shared_host is not None:
                    self.uc.mem_map_ptr(page, self.page_size, UC_PROT_ALL, shared_host)
            finally:
                self._inside_unicorn_call = False
        self.flush_tlb()

    def flush_tlb(self) -> None:
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    # ---- changing the layout -----------------------------------------------------------------

    def _split(self, address: int) -> None:
        """Make `address` a mapping boundary (when it falls inside one)."""
        m = self.find(address)
        if m is None or m.start == address:
            return
        i = self._maps.index(m)
        delta = address - m.start
        tail = dataclasses.replace(
            m,
            start=address,
            offset=m.offset + delta,
            host_address=None if m.host_address is None else m.host_address + delta,
        )
        m.end = address
        self._maps.insert(i + 1, tail)
        self._starts.insert(i + 1, address)

    def _range(self, start: int, end: int) -> list[Mapping]:
        """Mappings inside [start, end), split at both ends."""
        self._split(start)
        self._split(end)
        i = bisect.bisect_left(self._starts, start)
        j = bisect.bisect_left(self._starts, end)
        return self._maps[i:j]

    def map(
        self,
        start: int,
        length: int,
        prot: int,
        name: str = "",
        *,
        offset: int = 0,
        host_address: int | None = None,
        device: int = 0,
        inode: int = 0,
        private_host: int | None = None,
        file_end: int | None = None,
    ) -> Mapping:
        """Map [start, start+length) (page aligned), replacing whatever was there (MAP_FIXED).

        `host_address`: MAP_SHARED host pages to lend; `private_host`: private host pages of
        ours that already hold the contents (mremap moved them); neither: fresh zero pages.
        OSError(ENOMEM) when the host cannot back it."""
        end = start + length
        self.unmap(start, length)
        self._recent_span = None
        backed = prot != PROT_NONE or host_address is not None or private_host is not None
        if backed:
            self._back_range(start, length, host_address, private_host)
        self.flush_tlb()
        m = Mapping(
            start,
            end,
            prot,
            name,
            offset=offset,
            shared=host_address is not None,
            host_address=host_address,
            device=device,
            inode=inode,
            backed=backed,
            file_end=file_end,
        )
        i = bisect.bisect_left(self._starts, start)
        self._maps.insert(i, m)
        self._starts.insert(i, start)
        return m

    def _back_range(
        self,
        start: int,
        length: int,
        host_address: int | None = None,
        private_host: int | None = None,
    ) -> None:
        """Give unicorn memory for [start, start+length): the host pages at `host_address`
        (MAP_SHARED: the file, or after fork the other process, sees every store), else our
        private host pages at `private_host`, else fresh zeroed private host pages."""
        owned = host_address is None
        if host_address is not None:
            host = host_address
        elif private_host is not None:
            host = private_host
        else:
            host = host_private_pages(length)
        self._inside_unicorn_call = True
        try:
            self.uc.mem_map_ptr(start, length, UC_PROT_ALL, host)
        except UcError:
            if owned:
                _host_munmap(host, length)
            raise OSError(errno.ENOMEM, "the host cannot back this mapping") from None
        finally:
            self._inside_unicorn_call = False
        i = bisect.bisect_left(self._host_pages_starts, start)
        self._host_pages.insert(i, HostPages(start, start + length, host, owned))
        self._host_pages_starts.insert(i, start)

    def _drop_host_pages(self, start: int, end: int, release: bool = True) -> None:
        """Forget the host pages behind guest [start, end), and release them when they are
        ours, unless `release` is False (they live on elsewhere: mremap moved them)."""
        self._recent_pages = None
        self._recent_span = None
        table = self._host_pages
        i = max(bisect.bisect_right(self._host_pages_starts, start) - 1, 0)
        while i < len(table) and table[i].start < end:
            pages = table[i]
            if pages.end <= start:
                i += 1
                continue
            cut_start, cut_end = max(pages.start, start), min(pages.end, end)
            if pages.owned and release:
                _host_munmap(pages.host + cut_start - pages.start, cut_end - cut_start)
            pieces = []
            if pages.start < cut_start:
                pieces.append(HostPages(pages.start, cut_start, pages.host, pages.owned))
            if cut_end < pages.end:
                host = pages.host + cut_end - pages.start
                pieces.append(HostPages(cut_end, pages.end, host, pages.owned))
            table[i : i + 1] = pieces
            self._host_pages_starts[i : i + 1] = [p.start for p in pieces]
            i += len(pieces)

    def _pages_holding(self, address: int, end: int) -> HostPages | None:
        """The host pages behind all of guest [address, end), if one piece holds it."""
        pages = self._recent_pages
        if pages is not None and pages.start <= address and end <= pages.end:
            return pages
        i = bisect.bisect_right(self._host_pages_starts, address) - 1
        if i < 0:
            return None
        pages = self._host_pages[i]
        if end > pages.end:
            return None
        self._recent_pages = pages
        return pages

    def ensure_backed(self, start: int, end: int) -> None:
        """Back the reserved (never accessible) mappings inside [start, end) with memory."""
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        j = bisect.bisect_left(self._starts, end)
        if all(m.backed for m in self._maps[i:j]):
            return  # the common case: nothing to split
        for m in self._range(start, end):
            if not m.backed:
                self._back_range(m.start, m.size)
                m.backed = True

    def unmap(self, start: int, length: int, release_host: bool = True) -> None:
        """Unmap [start, start+length); the host pages behind it are released unless
        `release_host` is False (they live on elsewhere: mremap moved them)."""
        victims = self._range(start, start + length)
        self._recent_span = None
        if not victims:
            return
        self._inside_unicorn_call = True
        try:
            for m in victims:
                if m.backed:
                    self.uc.mem_unmap(m.start, m.size)
                    self._drop_host_pages(m.start, m.end, release_host)
                if m.host_address is not None and release_host:
                    _host_munmap(m.host_address, m.size)
        finally:
            self._inside_unicorn_call = False
        i = self._maps.index(victims[0])
        del self._maps[i : i + len(victims)]
        del self._starts[i : i + len(victims)]
        self.flush_tlb()

    def protect(self, start: int, length: int, prot: int) -> bool:
        """Change protections; False when part of the range is unmapped (ENOMEM)."""
        end = start + length
        if not self.is_fully_mapped(start, end):
            return False
        self._recent_span = None
        if prot != PROT_NONE:
            self.ensure_backed(start, end)
        gains_exec = False
        for m in self._range(start, end):
            gains_exec = gains_exec or bool(prot & PROT_EXEC and not m.prot & PROT_EXEC)
            m.prot = prot
        self._merge_around(start, end)
        self.flush_tlb()
        if gains_exec:
            self._drop_translations(start, end)
        return True

    def _drop_translations(self, start: int, end: int) -> None:
        """Forget code unicorn translated from [start, end): its bytes changed without a guest
        store (the only kind unicorn notices), or may have while they were not executable
        (see `host_span`)."""
        self._inside_unicorn_call = True
        try:
            # one host piece at a time: unicorn's range is contiguous in its own RAM blocks
            i = max(bisect.bisect_right(self._host_pages_starts, start) - 1, 0)
            for pages in self._host_pages[i:]:
                if pages.start >= end:
                    break
                if pages.end > start:
                    self.uc.ctl_remove_cache(max(pages.start, start), min(pages.end, end))
        finally:
            self._inside_unicorn_call = False

    def is_fully_mapped(self, start: int, end: int) -> bool:
        address = start
        while address < end:
            m = self.find(address)
            if m is None:
                return False
            address = m.end
        return True

    def _merge_around(self, start: int, end: int) -> None:
        """Join neighbours that became identical, so /proc/self/maps reads like Linux's."""
        i = max(bisect.bisect_left(self._starts, start) - 1, 0)
        while i + 1 < len(self._maps) and self._maps[i].start < end:
            a, b = self._maps[i], self._maps[i + 1]
            if (
                a.end == b.start
                and a.prot == b.prot
                and a.name == b.name
                and a.host_address is None
                and b.host_address is None
                and a.backed == b.backed
                and (not a.name or a.offset + a.size == b.offset)
            ):
                a.end = b.end
                del self._maps[i + 1]
                del self._starts[i + 1]
            else:
                i += 1

    def move(self, old: int, old_size: int, new: int, new_size: int) -> None:
        """mremap's move: the pages' contents go to `new`, the old range is unmapped.

        [old, old+old_size) must lie in one mapping. A shared mapping keeps its host pages
        (the host's mremap resizes them), so it stays shared with the file or other processes;
        for it `new` may equal `old` (growing in place)."""
        template = self._range(old, old + old_size)[0]
        if not template.backed:  # a reservation: nothing to copy
            self.unmap(old, old_size)
            self.map(new, new_size, template.prot, template.name)
            return
        data: bytes | None = None
        shared_host: int | None = None
        private_host: int | None = None
        pages = self._pages_holding(old, old + old_size)
        if template.host_address is not None:
            shared_host = _host_mremap(template.host_address, old_size, new_size)
            self.unmap(old, old_size, release_host=False)
        elif pages is not None and pages.owned:
            # the host moves (and grows, with zero pages) our private pages: no copy
            private_host = _host_mremap(pages.host + (old - pages.start), old_size, new_size)
            self.unmap(old, old_size, release_host=False)
        else:
            # the new range is free (Linux refuses overlapping moves), so the old one can go first
            data = bytes(self.read(old, min(old_size, new_size), check=False))
            self.unmap(old, old_size)
        self.map(
            new,
            new_size,
            template.prot,
            template.name,
            offset=template.offset,
            host_address=shared_host,
            device=template.device,
            inode=template.inode,
            private_host=private_host,
            file_end=None if template.file_end is None else template.file_end - old + new,
        )
        if data is not None:
            self.uc.mem_write(new, data)

    # ---- guest memory access (for syscalls) --------------------------------------------------

    def check_writable(self, address: int, size: int) -> None:
        """GuestFault unless the guest may write all of [address, address+size): callers use
        it to fail with EFAULT before consuming input they could not deliver."""
        if size:
            self._check(address, size, PROT_WRITE)

    def _check(self, address: int, size: int, needed: int) -> None:
        end = address + size
        while address < end:
            m = self.find(address)
            if m is None:
                raise GuestFault(address, needed == PROT_WRITE)
            if not effective_prot(m.prot) & needed:
                raise GuestFault(address, needed == PROT_WRITE, mapped=True)
            if m.file_end is not None and min(end, m.end) > m.file_end:
                page = max(address, m.file_end) & ~(self.page_size - 1)
                if self._past_file_end(m, page):  # Linux's copy_{from,to}_user: EFAULT
                    raise GuestFault(max(address, m.file_end), needed == PROT_WRITE, mapped=True)
            address = m.end

    def host_span(self, address: int, size: int, write: bool) -> int:
        """The host address of guest [address, address+size) (size > 0), for a host call
        that reads it (`write` False) or fills it directly; GuestFault when the guest may not
        access all of it. 0 when the bytes must be copied instead: the range spans host
        pieces, or (filling) it holds code, whose translations only unicorn's own stores drop.
        """
        # the hot path of every read()/write(): programs reuse their buffers
        recent = self._recent_span
        if (
            recent is not None
            and recent[0] <= address
            and address + size <= recent[1]
            and (recent[3] or not write)
        ):
            return address + recent[2]
        end = address + size
        m = self.find(address)
        if m is not None and end <= m.end and (m.file_end is None or end <= m.file_end):
            prot = m.prot
            fillable = bool(prot & PROT_WRITE and not prot & PROT_EXEC)
            if fillable or (not write and prot & (PROT_READ | PROT_WRITE)):
                pages = self._pages_holding(address, end)
                if pages is None:
                    return 0
                delta = pages.host - pages.start
                self._recent_span = (
                    max(m.start, pages.start),
                    min(m.end, pages.end),
                    delta,
                    fillable,
                )
                return address + delta
        self._check(address, size, PROT_WRITE if write else PROT_READ)
        return 0

    def read(self, address: int, size: int, check: bool = True) -> bytes:
        if size <= 0:
            return b""
        if check:
            host = self.host_span(address, size, write=False)
            if host:
                return ctypes.string_at(host, size)
        try:
            return bytes(self.uc.mem_read(address, size))
        except UcError as exc:
            raise GuestFault(address) from exc

    def write(self, address: int, data: bytes, check: bool = True) -> None:
        if not data:
            return
        if check:
            host = self.host_span(address, len(data), write=True)
            if host:
                ctypes.memmove(host, data, len(data))
                return
        end = address + len(data)
        pages = None if check else self._pages_holding(address, end)
        if pages is not None and pages.owned:  # ours, so writable whatever the guest's view
            ctypes.memmove(pages.host + (address - pages.start), data, len(data))
        else:
            try:
                self.uc.mem_write(address, bytes(data))
            except UcError as exc:
                raise GuestFault(address, True) from exc
        if any(m.prot & PROT_EXEC for m in self._overlapping(address, end)):
            # neither a host store nor uc_mem_write drops code translated from these bytes
            self._drop_translations(address, end)

    def host_span_of_new(self, address: int, size: int) -> int:
        """The host address of [address, address+size) whatever the guest's protections, for
        filling a mapping just made (so no code was translated from it yet); 0 when it is not
        one piece of our own private host memory."""
        pages = self._pages_holding(address, address + size)
        if pages is None or not pages.owned:
            return 0
        return pages.host + (address - pages.start)

    def _overlapping(self, start: int, end: int) -> list[Mapping]:
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        j = bisect.bisect_left(self._starts, end)
        return [m for m in self._maps[i:j] if m.end > start]

    def write_init(self, address: int, data: bytes) -> None:
        """Write regardless of protection (loader, signal frames on Linux's behalf)."""
        if data:
            self.ensure_backed(address, address + len(data))
        self.write(address, data, check=False)

    def read_u64(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def write_u64(self, address: int, value: int) -> None:
        self.write(address, (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little"))

    def read_u32(self, address: int) -> int:
        return int.from_bytes(self.read(address, 4), "little")

    def write_u32(self, address: int, value: int) -> None:
        self.write(address, (value & 0xFFFF_FFFF).to_bytes(4, "little"))

    def read_cstr(self, address: int, limit: int = 1 << 16) -> bytes:
        """A NUL-terminated string; GuestFault when it runs into unmapped memory."""
        out = bytearray()
        while len(out) < limit:
            chunk_end = (address | (self.page_size - 1)) + 1
            chunk = self.read(address, chunk_end - address)
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                return bytes(out)
            out += chunk
            address = chunk_end
        raise GuestFault(address)  # ENAMETOOLONG is decided by the caller's limit

    def read_ptr_array(self, address: int, limit: int = 1 << 16) -> list[int]:
        """A NULL-terminated array of pointers (argv/envp)."""
        out = []
        while len(out) < limit:
            value = self.read_u64(address)
            if value == 0:
                return out
            out.append(value)
            address += 8
        raise GuestFault(address)

    def mapped_bytes(self) -> int:
        return sum(m.size for m in self._maps)
