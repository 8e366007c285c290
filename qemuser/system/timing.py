"""How the run loops slice guest time (one place for the machine, the platforms and SMP)."""

from __future__ import annotations

SLICE = 200_000  # instructions per emu_start: bounds how late a pending event is noticed
IDLE_MAX_NS = 10_000_000  # longest single sleep in WFI (input and timers wake it earlier)
# emu_start(until=0) would stop a guest that runs at address 0 (flash): give one never reached.
NEVER = 0xFFFF_FFFF_FFFF_FFF0
