"""The riscv hart's `time` CSR without a trap: unicorn's own rdtime hook, given a source.

QEMU's riscv CPU reads `time` (rdtime, `csrr rd, time`) through `env->rdtime_fn`, a callback
the board installs; unicorn never installs one, so every rdtime raises illegal instruction and
the platform emulated it from the trap: a trap entry, an instruction fetch through the page
table and a dozen register accesses, ~20 µs a read from Python, and Linux reads the clock ~90k
times a boot. With a callback in that slot the CSR read runs inside the engine's own CSR helper
(the translation block ends there, as after every CSR access) and calls one ctypes callback.

unicorn 2.1.4 has no API for the slot, so it is found as follows (and nothing is written when
any step disagrees: the engine then keeps trapping, and the platform keeps emulating):

- `uc_context_save` copies `CPURISCVState` from its start up to `rdtime_fn` (the context size
  is `offsetof(CPURISCVState, rdtime_fn)`, qemu/target/riscv/unicorn.c), so the slot's offset
  is the context's data size;
- the state itself is found through the engine's struct: one of its pointers leads to the
  `RISCVCPU` object, which holds the state; the state starts with the 32 general registers,
  which are set to known values for the search (and restored after);
- checks: the slot is NULL, and the state's `uc` back pointer (after `debugger`, `fp_status`
  and `timer`, 32 bytes past the slot) is the engine itself.

Memory is read through /proc/self/mem, so a wrong guess of a pointer is an error, not a crash.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable

from unicorn import Uc, uc_version
from unicorn import riscv_const as rv

_SUPPORTED_VERSION = (2, 1)
_SEARCH_BYTES = 0x4000  # of struct uc_struct: `cpu` sits well inside it
_OBJECT_BYTES = 0x40000  # of the RISCVCPU object: the state is behind CPUState and the TLB
_UC_BACK_POINTER = 32  # rdtime_fn, bool debugger + float_status, QEMUTimer *timer, uc
_MASK64 = (1 << 64) - 1

# uint64_t (*rdtime_fn)(void)
RDTIME_FN = ctypes.CFUNCTYPE(ctypes.c_uint64)


def _magic(uc: Uc) -> tuple[int, ...]:
    """Register values for the search, different for each engine: a copy left in freed memory
    by another engine's search (its saved context) must not match this one's."""
    handle = uc._uch.value
    return tuple((0x7164_7469_6D65_0000 + i * 0x0101) ^ (handle << 16 & _MASK64) for i in range(31))


def _state_address(uc: Uc, magic: tuple[int, ...]) -> int | None:
    """The engine's CPURISCVState, or None. The registers x1-x31 must hold `magic` meanwhile."""
    pattern = struct.pack("<32Q", 0, *magic)
    base = uc._uch.value
    raw = ctypes.string_at(base, _SEARCH_BYTES)
    found: set[int] = set()
    try:
        mem = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for offset in range(0, len(raw), 8):
            (pointer,) = struct.unpack_from("<Q", raw, offset)
            if pointer < 0x10000 or pointer & 7 or pointer >> 47:
                continue  # not a user-space heap pointer
            try:
                blob = os.pread(mem, _OBJECT_BYTES, pointer)
            except OSError:
                continue
            at = blob.find(pattern)
            if at >= 0:
                found.add(pointer + at)
    finally:
        os.close(mem)
    return found.pop() if len(found) == 1 else None


def _slot_offset(uc: Uc, magic: tuple[int, ...]) -> int | None:
    """offsetof(CPURISCVState, rdtime_fn): the data size of a saved context."""
    context = uc.context_save()
    raw = ctypes.string_at(context.context, context.size)
    at = raw.find(struct.pack("<32Q", 0, *magic))  # the data starts with the registers
    return context.size - at if at > 0 else None


def install(uc: Uc, source: Callable[[], int]) -> RDTIME_FN | None:
    """Make `source()` the value of the `time` CSR of this (not yet started) engine. Returns the
    callback, which the caller must keep alive as long as the engine; None when the layout is
    not the known one (the engine keeps raising illegal instruction at rdtime)."""
    if uc_version()[:2] != _SUPPORTED_VERSION or not uc._uch.value:
        return None
    magic = _magic(uc)
    saved = [uc.reg_read(rv.UC_RISCV_REG_X1 + i) for i in range(31)]
    try:
        for i, value in enumerate(magic):
            uc.reg_write(rv.UC_RISCV_REG_X1 + i, value)
        state = _state_address(uc, magic)  # before any context copy of the values exists
        slot = _slot_offset(uc, magic)
    finally:
        for i, value in enumerate(saved):
            uc.reg_write(rv.UC_RISCV_REG_X1 + i, value)
    if state is None or slot is None:
        return None
    current, back = struct.unpack("<Q24xQ", ctypes.string_at(state + slot, _UC_BACK_POINTER + 8))
    if current != 0 or back != uc._uch.value:
        return None

    def read_time() -> int:
        # Called from inside the engine: an exception here could only be printed by ctypes.
        try:
            return source() & 0xFFFF_FFFF_FFFF_FFFF
        except Exception:  # noqa: BLE001 - a clock that cannot fail
            return 0

    callback = RDTIME_FN(read_time)
    ctypes.c_void_p.from_address(state + slot).value = ctypes.cast(callback, ctypes.c_void_p).value
    return callback
