"""Turn off unicorn's exit check after every guest load and store, where nothing needs it.

unicorn 2.1.4 emits a call to `helper_check_exit_request` after *every* guest memory access
(qemu/tcg/tcg-op.c, `check_exit_request`), so that a memory hook calling `uc_emu_stop()` stops
the guest right after that access. Every translated block also starts with the same check
(`gen_tb_start`), which stays. Measured on the compute benchmark (a loop of 14 instructions with
4 memory accesses): the per-access calls are 12% of all host instructions executed, and turning
them off makes the loop 25-45% faster.

The engine has a switch for this, `uc_struct.no_exit_request` (include/uc_priv.h; the ARM32
translator uses it to keep IT blocks whole), but no API to set it. It is found here by the
fields around it, whose values are known, and only when every one of them reads as expected;
otherwise nothing is written and the engine simply keeps its checks.

With the checks off, a stop requested during a memory access (a memory hook, an MMIO callback or
an instruction count reached inside a block) takes effect at the start of the next block instead
of after the access. Callers that need the exact stop (single-stepping one instruction with
memory hooks) turn the checks back on around it with `exact_stops`.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from unicorn import Uc, uc_version

# The fields that precede `no_exit_request` in unicorn 2.1.4's struct uc_struct, with the values
# every engine built with 4 KiB target pages holds:
#   uint32_t target_page_size (4096); uint32_t target_page_align (4095);
#   uint64_t qemu_host_page_size (4096); uint64_t qemu_real_host_page_size (4096);
#   int qemu_icache_linesize; uc_context_content context_content; int cpu_context_size;
#   (4 bytes of padding) uint64_t next_pc; bool hook_insert; bool first_tb;
#   bool no_exit_request; bool init_done;
_ANCHOR = struct.pack("<IIQQ", 4096, 4095, 4096, 4096)
# icache line, context content, context size, padding, next_pc, hook_insert, first_tb
_TAIL = struct.Struct("<iiiIQ??")
_NO_EXIT_REQUEST = len(_ANCHOR) + _TAIL.size  # offset of no_exit_request from the anchor
_SEARCH_BYTES = 0x4000  # the anchor sits ~2 KiB into the struct; the struct is larger than this
_SUPPORTED_VERSION = (2, 1)  # uc_version()'s major, minor whose layout this follows
_CONTEXT_CONTENT_VALUES = (1, 2, 3)  # UC_CTL_CONTEXT_CPU, _MEMORY, or both


def _flag_address(uc: Uc) -> int | None:
    """The address of the engine's `no_exit_request`, or None when the layout is not the known
    one (another unicorn version, a page size other than 4 KiB, a field with an odd value)."""
    major, minor, _combined = uc_version()
    if (major, minor) != _SUPPORTED_VERSION:
        return None
    base = uc._uch.value  # the engine's struct uc_struct *
    if not base:
        return None
    raw = ctypes.string_at(base, _SEARCH_BYTES)
    at = raw.find(_ANCHOR)
    if at < 0 or raw.find(_ANCHOR, at + 1) >= 0:
        return None  # absent, or ambiguous
    icache_line, content, context_size, _pad, _next_pc, hook_insert, _first_tb = _TAIL.unpack_from(
        raw, at + len(_ANCHOR)
    )
    flag = raw[at + _NO_EXIT_REQUEST]
    sane = (
        icache_line in (0, 16, 32, 64, 128, 256)
        and content in _CONTEXT_CONTENT_VALUES
        and 0 < context_size < 1 << 20
        and not hook_insert
        and flag in (0, 1)
    )
    return base + at + _NO_EXIT_REQUEST if sane else None


class ExitChecks:
    """The per-access exit checks of one engine: `skip()` turns them off if the engine's layout
    is the known one; `exact_stops()` turns them back on for a block of code."""

    def __init__(self, uc: Uc) -> None:
        self._uc = uc
        uc.ctl_get_page_size()  # unicorn fills the struct lazily, on the first call that needs it
        address = _flag_address(uc)
        self._flag = ctypes.c_bool.from_address(address) if address is not None else None

    @property
    def available(self) -> bool:
        return self._flag is not None

    def skip(self) -> bool:
        """Stop checking after each memory access; False when the engine keeps its checks."""
        if self._flag is None:
            return False
        self._flag.value = True
        return True

    @contextmanager
    def exact_stops(self) -> Iterator[None]:
        """Check after every access again inside the block (needed where a memory hook must stop
        the guest right at the access, such as a one-instruction replay)."""
        if self._flag is None:
            yield
            return
        previous = self._flag.value
        self._flag.value = False
        # The flag is read when a block is translated, not when it runs: drop the blocks
        # translated without the checks so that the code inside is translated again with them.
        self._uc.ctl_flush_tb()
        try:
            yield
        finally:
            self._flag.value = previous
