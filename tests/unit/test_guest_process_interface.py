"""Handlers see the process only through qemuser.syscalls.context.GuestProcess, and the
runtime's Process has all of it. Read from the source with `ast` (no engine is built): what a
handler module touches of `proc` (and of proc.sched, proc.config, proc.linux) must be declared
by the Protocols, and every declared member must exist on the runtime's Process."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "qemuser"
CONTEXT = PACKAGE / "syscalls" / "context.py"
# the Process class and the mixins it is made of (qemuser/user/process.py)
RUNTIME_CLASSES = {
    PACKAGE / "user" / "process.py": "Process",
    PACKAGE / "user" / "cpuloop.py": "CpuLoop",
    PACKAGE / "user" / "signals.py": "SignalDelivery",
}
# GuestProcess attribute -> the Protocol that declares what handlers may touch of it
NESTED = {"sched": "GuestScheduler", "config": "GuestConfig", "linux": "LinuxFacts"}


def protocol_members(path: Path) -> dict[str, set[str]]:
    """Class name -> the names its body declares (annotations, methods, properties)."""
    members: dict[str, set[str]] = {}
    body = ast.parse(path.read_text()).body
    # classes under `if TYPE_CHECKING:` count too (a Protocol needed by type checkers only)
    nodes = body + [n for block in body if isinstance(block, ast.If) for n in block.body]
    for node in nodes:
        if isinstance(node, ast.ClassDef):
            names = members.setdefault(node.name, set())
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
                elif isinstance(item, ast.FunctionDef):
                    names.add(item.name)
    return members


def handler_uses(path: Path) -> set[tuple[str, ...]]:
    """('mem',), ('sched', 'multi')...: attribute chains read off `proc` (or off a local
    that was assigned proc.<attr>) in one module."""
    uses: set[tuple[str, ...]] = set()
    tree = ast.parse(path.read_text())
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.Lambda)):
            continue
        aliases: dict[str, str] = {}
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "proc"
            ):
                aliases[node.targets[0].id] = node.value.attr
        for node in ast.walk(function):
            if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Name):
                continue
            if node.value.id == "proc":
                uses.add((node.attr,))
            elif node.value.id in aliases:
                uses.add((aliases[node.value.id], node.attr))
    for node in ast.walk(tree):  # proc.sched.multi and the like
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "proc"
        ):
            uses.add((node.value.attr, node.attr))
    return uses


def runtime_members() -> set[str]:
    names: set[str] = set()
    for path, class_name in RUNTIME_CLASSES.items():
        tree = ast.parse(path.read_text())
        (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
        for item in cls.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                names.add(item.target.id)
            elif isinstance(item, ast.FunctionDef):
                names.add(item.name)
        for node in ast.walk(cls):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    names.add(target.attr)
    return names


def handler_modules() -> list[Path]:
    skip = {"context.py"}
    return [p for p in sorted((PACKAGE / "syscalls").rglob("*.py")) if p.name not in skip]


def test_handlers_touch_only_what_guest_process_declares() -> None:
    protocols = protocol_members(CONTEXT)
    allowed = protocols["GuestProcess"]
    outside: list[str] = []
    for path in handler_modules():
        for chain in sorted(handler_uses(path)):
            if chain[0] not in allowed:
                outside.append(f"{path.relative_to(PACKAGE)}: proc.{chain[0]}")
            elif len(chain) == 2 and chain[0] in NESTED:
                if chain[1] not in protocols[NESTED[chain[0]]]:
                    outside.append(f"{path.relative_to(PACKAGE)}: proc.{'.'.join(chain)}")
    assert not outside, "\n".join(outside)


def test_every_member_of_guest_process_is_used_by_some_handler() -> None:
    """The Protocol is the list of what handlers touch, no more: a member no handler uses is
    one to drop (or a sign that a handler lost its use of it)."""
    chains = {chain for path in handler_modules() for chain in handler_uses(path)}
    protocols = protocol_members(CONTEXT)
    unused = {name for name in protocols["GuestProcess"] if (name,) not in chains}
    for attribute, protocol in NESTED.items():
        unused |= {
            f"{attribute}.{name}" for name in protocols[protocol] if (attribute, name) not in chains
        }
    assert not unused, sorted(unused)


def test_the_runtime_process_has_every_member_of_guest_process() -> None:
    missing = protocol_members(CONTEXT)["GuestProcess"] - runtime_members()
    assert not missing, sorted(missing)


def test_handler_modules_never_import_the_runtime() -> None:
    """Not even under TYPE_CHECKING: the Protocol is their whole view of it."""
    offenders = []
    for path in handler_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qemuser.user"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            if isinstance(node, ast.Import) and any(
                alias.name.startswith("qemuser.user") for alias in node.names
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders


def test_the_checker_sees_uses_through_aliases(tmp_path: Path) -> None:
    module = tmp_path / "handler.py"
    module.write_text(
        "def f(proc):\n"
        "    sched = proc.sched\n"
        "    sched.multi\n"
        "    proc.mem.read(0, 1)\n"
        "    return proc.config.arch\n"
    )
    assert handler_uses(module) >= {("sched",), ("sched", "multi"), ("mem",), ("config", "arch")}


def test_the_runtime_process_has_every_member_of_runtime_process() -> None:
    """The wider view the runtime's own modules (procfs, spawn, threads, the GDB target) use."""
    declared = protocol_members(PACKAGE / "user" / "runtime.py")["RuntimeProcess"]
    missing = declared - runtime_members()
    assert not missing, sorted(missing)
