"""-d logging other than strace: in_asm (capstone), page (the memory layout)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qemuser.syscalls.process import Process


def install_logging(proc: Process) -> None:
    """Hook what the -d items ask for into a loaded process (before it runs)."""
