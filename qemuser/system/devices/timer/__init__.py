"""Timers with state of their own: the ARM generic timer (per CPU, reached by MSR)."""
