"""The ARM generic timer's compare logic (ARM ARM D11.2): one timer's CTL and CVAL, as the
guest programs them through TVAL, CTL and CVAL.

The registers are the CPU's own (reached with MSR/MRS, not MMIO), so there is no window and no
device-tree node here: arch/aarch64.py catches the guest's MSR writes, keeps them in a
`GenericTimer`, mirrors the result into the CPU (reads then run natively) and raises the PPI.
"""

from __future__ import annotations

from dataclasses import dataclass

CTL_ENABLE, CTL_IMASK, CTL_ISTATUS = 1, 2, 4
TVAL, CTL, CVAL = 0, 1, 2  # op2 of the timer registers (CNTV_TVAL_EL0, _CTL_EL0, _CVAL_EL0)
TIMER_HZ = 62_500_000  # the counter's frequency: unicorn's CNTFRQ


@dataclass
class GenericTimer:
    """One ARM generic timer (CTL bits ENABLE and IMASK, compare value in counter ticks)."""

    ctl: int = 0
    cval: int = 0
    istatus: bool = False  # the ISTATUS last mirrored into the CPU

    def write(self, op2: int, value: int, now: int) -> None:
        """A guest write of TVAL (a signed 32-bit offset from now), CTL or CVAL."""
        if op2 == TVAL:
            self.cval = (now + ((value & 0xFFFF_FFFF) ^ 0x8000_0000) - 0x8000_0000) % (1 << 64)
        elif op2 == CTL:
            self.ctl = value & (CTL_ENABLE | CTL_IMASK)
        else:
            self.cval = value

    def condition(self, now: int) -> bool:
        """ISTATUS: enabled and the counter has reached the compare value (IMASK aside)."""
        return bool(self.ctl & CTL_ENABLE) and now >= self.cval

    def firing(self, now: int) -> bool:
        """The interrupt line: the condition met and not masked."""
        return self.ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE and now >= self.cval

    def ns_until(self, now: int, limit_ns: int) -> int:
        """Host nanoseconds until the timer fires (limit_ns when disabled or masked)."""
        if self.ctl & (CTL_ENABLE | CTL_IMASK) != CTL_ENABLE:
            return limit_ns
        return min(limit_ns, max(0, self.cval - now) * 1_000_000_000 // TIMER_HZ)
