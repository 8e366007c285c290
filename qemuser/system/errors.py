"""The error system mode reports as one line (a configuration or boot problem), in a module of
its own so that the machine's parts (the SMP loop, the platforms) can raise it without importing
the machine."""

from __future__ import annotations


class MachineError(Exception):
    """A configuration or boot problem to report as one line (bad image, overlap, ...)."""
