"""The guest-fault exception, apart from the address space (memory.py) because that module needs
unicorn: the system-call layer's dispatch and argument kinds catch and raise it, and they, like
the unit tests of strace formatting and guest layouts, must import without the CPU."""

from __future__ import annotations


class GuestFault(Exception):
    """A guest address that is not mapped, or not with the needed access."""

    def __init__(self, address: int, write: bool = False, mapped: bool = False) -> None:
        super().__init__(f"guest fault at {address:#x}")
        self.address = address
        self.write = write
        self.mapped = mapped  # True: protection (SEGV_ACCERR); False: nothing there (SEGV_MAPERR)
