"""The Python entry of the static binfmt interpreter (static/main.c runs `main()`).

Only meaningful inside that executable: `_qemuser_static` is its built-in C module. Everything
is already in memory (frozen modules, linked-in C), so this works in any mount namespace: it
never opens a file of ours. Two things differ from a normal Python and are mended here:
  - ctypes cannot look names up with dlsym() in a static executable, so ctypes.CDLL becomes
    StaticLibrary, which takes the addresses from the executable's own table (the uc_* functions
    of the linked-in unicorn and the libc calls qemuser makes);
  - the settings `qemuser-binfmt install` wrote (arch, sysroot) come from a slot in the file.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

import _qemuser_static  # type: ignore[import-not-found]  # built into the static executable


class StaticLibrary(ctypes.CDLL):
    """A CDLL over the functions linked into this executable (whatever library name is asked)."""

    def __init__(self, name: str | None, *args: Any, **kwargs: Any) -> None:
        kwargs["handle"] = 0  # no dlopen: nothing is loaded, the functions are already here
        super().__init__(name, *args, **kwargs)

    def __getitem__(self, name: str) -> Any:  # ctypes' own signature, untyped
        address = _qemuser_static.symbol(name)
        if address is None:
            raise AttributeError(f"{self._name}: undefined symbol: {name} (not linked in)")
        function = self._FuncPtr(address)
        function.__name__ = name
        return function


def install_ctypes_shim() -> None:
    ctypes.CDLL = StaticLibrary  # type: ignore[misc]  # qemuser.host.libc: CDLL(None, ...)
    ctypes.cdll = ctypes.LibraryLoader(StaticLibrary)


def settings() -> dict[str, Any]:
    """What install wrote; the architecture defaults to the interpreter's name
    (qemuser-binfmt-<arch>, the path the kernel passes as our argv[0])."""
    found: dict[str, Any] = json.loads(_qemuser_static.settings().decode() or "{}")
    if not found.get("arch"):
        name = os.path.basename(sys.argv[0]) if sys.argv else ""
        found["arch"] = name.rpartition("-")[2]
    return found


def main() -> int:
    install_ctypes_shim()
    at_flags, exec_fd = _qemuser_static.kernel()
    from qemuser.binfmt.interpreter import main as interpreter_main

    args = ["--at-flags", str(at_flags), "--execfd", str(exec_fd), "--", *sys.argv[1:]]
    status = interpreter_main(json.dumps(settings()), args)
    # as qemuser-<arch> does (cli.user.exit_now): no interpreter teardown, only our buffers
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
