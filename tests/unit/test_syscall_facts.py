"""Every fact about a system call sits on its one `@syscall` declaration (blocks=, restart=),
and every name the code knows a call by is a declared one. Read from the handler modules'
source (no module is imported but the name tables, so no engine is needed)."""

from __future__ import annotations

import ast
from pathlib import Path

from qemuser.syscalls.deferred import DEFERRED_MODULES, EAGER_MODULES
from qemuser.syscalls.sysnums import numbers_for

SYSCALLS = Path(__file__).resolve().parents[2] / "qemuser" / "syscalls"
ARCHES = ("aarch64", "riscv64")

# The calls that may sleep in the host, so that with several guest threads they run on the
# calling thread's own host thread (qemuser.user.threads): reads and writes of pipes, sockets
# and terminals, waits for children, sleeps, polls, locks, opening a FIFO, System V IPC,
# pipe splicing. A new call that may sleep goes here and on its declaration (blocks=True).
BLOCKING = {
    "read", "readv", "write", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "wait4", "waitid", "nanosleep", "clock_nanosleep", "ppoll", "pselect6", "epoll_pwait",
    "epoll_pwait2", "accept", "accept4", "connect", "recvfrom", "recvmsg", "sendto", "sendmsg",
    "flock", "openat", "fsync", "fdatasync", "sendfile", "copy_file_range", "rt_sigtimedwait",
    "getrandom", "msgrcv", "msgsnd", "semop", "semtimedop", "splice", "tee", "vmsplice",
    "mq_timedsend", "mq_timedreceive",
}  # fmt: skip
# man 7 signal, "Interruption of system calls and library functions by signal handlers": the
# calls never restarted after a handler, whatever SA_RESTART says (those of its list that the
# asm-generic arches have; io_getevents is left out as we do not declare it).
NEVER_RESTARTED = {
    "nanosleep", "clock_nanosleep", "ppoll", "pselect6", "epoll_pwait", "epoll_pwait2",
    "rt_sigsuspend", "rt_sigtimedwait", "msgrcv", "msgsnd", "semop", "semtimedop",
}  # fmt: skip


def _keyword(call: ast.Call, name: str, default: bool) -> bool:
    for keyword in call.keywords:
        if keyword.arg == name:
            assert isinstance(keyword.value, ast.Constant), ast.dump(keyword)
            return bool(keyword.value.value)
    return default


def declarations() -> dict[str, dict[str, object]]:
    """name -> {module, blocks, restart} for every @syscall(...) in the handler modules."""
    found: dict[str, dict[str, object]] = {}
    for path in sorted(SYSCALLS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if not (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Name)
                    and decorator.func.id == "syscall"
                ):
                    continue
                first = decorator.args[0]
                assert isinstance(first, ast.Constant) and isinstance(first.value, str)
                assert first.value not in found, f"{first.value} declared twice"
                found[first.value] = {
                    "module": path.stem,
                    "blocks": _keyword(decorator, "blocks", False),
                    "restart": _keyword(decorator, "restart", True),
                }
    return found


def test_every_declaration_names_a_call_the_kernel_numbers() -> None:
    numbered = set().union(*(numbers_for(arch) for arch in ARCHES))
    assert set(declarations()) - numbered == set()


def test_every_call_the_deferred_index_names_is_declared_there() -> None:
    declared = declarations()
    for module, names in DEFERRED_MODULES.items():
        for name in names:
            assert name in declared, name
            assert declared[name]["module"] == module, name
    assert {d["module"] for d in declared.values()} <= set(EAGER_MODULES) | set(DEFERRED_MODULES)


def test_the_blocking_calls_are_marked_on_their_declarations() -> None:
    declared = declarations()
    assert BLOCKING <= set(declared), sorted(BLOCKING - set(declared))
    assert {name for name, d in declared.items() if d["blocks"]} == BLOCKING


def test_the_never_restarted_calls_are_marked_on_their_declarations() -> None:
    declared = declarations()
    assert NEVER_RESTARTED <= set(declared), sorted(NEVER_RESTARTED - set(declared))
    assert {name for name, d in declared.items() if not d["restart"]} == NEVER_RESTARTED


def test_no_separate_name_set_of_call_facts_is_left() -> None:
    """The facts live on the declarations only: no module keeps a frozenset of call names
    beside them (as threads.OFFLOADED and process.NEVER_RESTARTED did)."""
    declared = set(declarations())
    offenders = []
    for path in sorted(SYSCALLS.parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Set, ast.Tuple, ast.List)) and len(node.elts) >= 3:
                names = {
                    e.value
                    for e in node.elts
                    if isinstance(e, ast.Constant) and e.value in declared
                }
                if len(names) >= 3 and path.name != "deferred.py":
                    offenders.append(f"{path.relative_to(SYSCALLS.parent)}:{node.lineno}")
    assert not offenders, offenders
