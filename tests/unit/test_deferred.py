"""The index of handler modules imported on first use (syscalls/deferred.py) against the
modules' own @syscall declarations: the registry stays the single place a call is declared."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qemuser.syscalls.deferred import (
    DEFERRED_MODULES,
    EAGER_MODULES,
    MODULE_OF,
    Deferred,
    import_all,
    table_entry,
)
from qemuser.syscalls.registry import REGISTRY, SyscallDef

SYSCALLS_DIR = Path(__file__).resolve().parents[2] / "qemuser" / "syscalls"


def declared_by_module() -> dict[str, set[str]]:
    import_all()
    modules: dict[str, set[str]] = {}
    for name, sysdef in REGISTRY.items():
        modules.setdefault(sysdef.handler.__module__.rsplit(".", 1)[1], set()).add(name)
    return modules


def test_index_lists_exactly_what_each_deferred_module_declares() -> None:
    declared = declared_by_module()
    for module, names in DEFERRED_MODULES.items():
        assert set(names) == declared.get(module, set()), module
        assert len(names) == len(set(names)), module


def test_every_declaring_module_is_eager_or_deferred() -> None:
    declared = declared_by_module()
    assert set(declared) == set(EAGER_MODULES) | set(DEFERRED_MODULES)
    assert not set(EAGER_MODULES) & set(DEFERRED_MODULES)
    # a new handler module must be listed too (import_all imports only the listed ones)
    files = {p.stem for p in SYSCALLS_DIR.glob("*.py") if "@syscall(" in p.read_text()}
    assert files == set(declared)


def test_table_entry_is_the_declaration_once_imported() -> None:
    import_all()
    for name in MODULE_OF:
        assert table_entry(name) is REGISTRY[name]
    assert table_entry("write") is REGISTRY["write"]
    assert table_entry("no_such_call") is None


def test_start_up_imports_no_deferred_module_and_resolves_on_first_use() -> None:
    """In a fresh interpreter: the emulator's imports leave the deferred modules out, their
    calls are Deferred entries, and resolving one imports its module and gives its declaration."""
    script = """
import sys
import qemuser.user.run
from qemuser.syscalls.deferred import DEFERRED_MODULES, Deferred, table_entry
from qemuser.syscalls.registry import REGISTRY, SyscallDef
loaded = sorted(m for m in DEFERRED_MODULES if "qemuser.syscalls." + m in sys.modules)
assert not loaded, loaded
entry = table_entry("socket")
assert isinstance(entry, Deferred) and entry.pending and entry.name == "socket", entry
sysdef = entry.resolve()
assert isinstance(sysdef, SyscallDef) and not sysdef.pending and sysdef is REGISTRY["socket"]
assert "qemuser.syscalls.net" in sys.modules
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stderr == ""
    assert done.stdout == "ok\n"


def test_deferred_entry_carries_the_name_the_scheduler_looks_at() -> None:
    entry = Deferred("wait4")
    assert entry.name == "wait4" and entry.pending
    sysdef = entry.resolve()
    assert isinstance(sysdef, SyscallDef) and sysdef.name == "wait4"
