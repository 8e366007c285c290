"""Register access straight through unicorn's C API, for the hooks that run many times a boot.

The binding's `reg_read`/`reg_write` pick a ctypes type for the register on every call and
cost ~5 µs each in Python; a prepared 64-bit buffer passed to `uc_reg_read`/`uc_reg_write`
costs well under 1 µs. A riscv trap or SBI call reads and writes about 30 registers.
"""

from __future__ import annotations

import ctypes

from unicorn import Uc
from unicorn.unicorn_py3.unicorn import uclib

_MASK64 = (1 << 64) - 1


class RegisterFile:
    """64-bit registers of one engine (not for the wider ones: vector, floating-point pairs)."""

    def __init__(self, uc: Uc) -> None:
        self._handle = uc._uch  # the engine handle the binding itself passes to C
        self._value = ctypes.c_uint64()
        self._ref = ctypes.byref(self._value)
        self._read = uclib.uc_reg_read
        self._write = uclib.uc_reg_write

    def read(self, reg: int) -> int:
        # Cleared first: a register the engine keeps in 32 bits (riscv's PRIV) writes only the
        # low half of the buffer.
        self._value.value = 0
        self._read(self._handle, reg, self._ref)
        return self._value.value

    def write(self, reg: int, value: int) -> None:
        self._value.value = value & _MASK64
        self._write(self._handle, reg, self._ref)
