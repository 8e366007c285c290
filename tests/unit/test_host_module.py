"""One host module (qemuser/host/): the only binding of the host's libc, and the only place a
host (x86_64) system call number is written. Read from the source (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "qemuser"
HOST = PACKAGE / "host"


def outside_host() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if HOST not in p.parents]


def test_host_syscall_numbers_are_defined_in_the_host_module_only() -> None:
    offenders = []
    for path in outside_host():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.startswith("HOST_SYS_"):
                        offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {target.id}")
    assert not offenders, offenders


def test_the_host_libc_is_bound_in_the_host_module_only() -> None:
    """ctypes.CDLL(None) (the process's own libc) appears once, in qemuser/host/libc.py:
    prototypes set on a second binding would not be those of the first."""
    offenders = []
    for path in outside_host():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "CDLL"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value is None
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders


def test_the_host_module_defines_them() -> None:
    tree = ast.parse((HOST / "sysnums.py").read_text())
    names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets}
    assert {"HOST_SYS_OPENAT", "HOST_SYS_PPOLL", "HOST_SYS_EPOLL_PWAIT"} <= names
    libc = (HOST / "libc.py").read_text()
    assert libc.count("ctypes.CDLL(None") == 1
