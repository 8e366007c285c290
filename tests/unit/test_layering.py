"""Imports point one way, `cli -> user | system | binfmt -> gdb -> syscalls -> loader -> host ->
cpu`, and form no cycle (README, Layout; shared/DESIGN.md). The graph is read from the source by
tests/layering.py; the tests at the end run the checker on small made-up packages, so that each
rule is seen to fail when it should.

binfmt may import user: the binfmt interpreter runs the foreign program in user mode, in the
process the kernel started, with user mode's option parser and runner. user and system never
import each other.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Iterable
from pathlib import Path

from tests.layering import (
    ImportGraph,
    Layering,
    ancestors,
    import_cycles,
    import_graph,
    layering_violations,
    stdlib_named,
)

PACKAGE = Path(__file__).resolve().parents[2] / "qemuser"

QEMUSER_LAYERING = Layering(
    root="qemuser",
    layers=(
        ("cpu",),  # imports nothing else of ours
        ("host",),  # the one libc binding, host syscall numbers
        ("loader",),
        ("syscalls",),
        ("gdb",),
        ("user", "system", "binfmt"),
        ("cli",),
    ),
    sibling_imports=frozenset({("binfmt", "user")}),
)


@functools.cache
def qemuser_graph() -> ImportGraph:
    """Read once (a few tenths of a second for the whole package) for the tests below."""
    return import_graph(PACKAGE)


def _report(problems: Iterable[object]) -> str:
    return "\n".join(str(problem) for problem in problems)


def test_every_import_points_down_the_layers() -> None:
    graph = qemuser_graph()
    assert not graph.problems, _report(graph.problems)
    violations = layering_violations(graph, QEMUSER_LAYERING)
    assert not violations, _report(violations)


def test_no_import_cycle() -> None:
    cycles = import_cycles(qemuser_graph())
    assert not cycles, _report(cycles)


def test_no_module_is_named_like_a_standard_library_module() -> None:
    # `import time` beside a time.py reads wrong, and tools (and scripts run from the folder)
    # take one for the other
    clashes = stdlib_named(qemuser_graph().modules.values())
    assert not clashes, "\n".join(
        f"{m.path}: named like the standard {m.name.rpartition('.')[2]}" for m in clashes
    )


def test_the_walk_sees_the_whole_package() -> None:
    # a checker that read nothing would pass the tests above
    graph = qemuser_graph()
    for module in ("qemuser.cpu", "qemuser.loader.elf", "qemuser.cli.user", "qemuser.system"):
        assert module in graph.modules
    assert len(graph.modules) >= 60
    assert any(e.source.startswith("qemuser.cli.") and e.explicit for e in graph.edges)


# ---- the checker itself, on made-up packages -----------------------------------------------

TOY = Layering(
    root="toy",
    layers=(("cpu",), ("loader",), ("user", "system", "binfmt"), ("cli",)),
    sibling_imports=frozenset({("binfmt", "user")}),
)


def make_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    """Files of a package named toy; every folder gets an empty __init__.py unless given."""
    top = tmp_path / "toy"
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for folder in [top, *top.rglob("*")]:
        if folder.is_dir() and not (folder / "__init__.py").exists():
            (folder / "__init__.py").write_text("")
    return top


def violations_of(tmp_path: Path, files: dict[str, str]) -> list[str]:
    graph = import_graph(make_tree(tmp_path, files))
    return [str(p) for p in graph.problems] + [str(p) for p in layering_violations(graph, TOY)]


def cycles_of(tmp_path: Path, files: dict[str, str]) -> list[str]:
    return [str(cycle) for cycle in import_cycles(import_graph(make_tree(tmp_path, files)))]


def test_an_upward_import_is_named_with_its_file_line_and_rule(tmp_path: Path) -> None:
    problems = violations_of(
        tmp_path,
        {
            "toy/loader/elf.py": "from toy.cpu import spec\n",
            "toy/cpu/spec.py": '"""doc"""\n\nimport os\nfrom toy.loader.elf import load\n',
        },
    )
    assert problems == [
        f"{tmp_path}/toy/cpu/spec.py:4: toy.cpu.spec imports toy.loader.elf: cpu may import "
        "only cpu (layering cli -> user | system | binfmt -> loader -> cpu)"
    ]


def test_imports_anywhere_count(tmp_path: Path) -> None:
    problems = violations_of(
        tmp_path,
        {
            "toy/cli/main.py": "X = 1\n",
            "toy/loader/elf.py": """\
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from toy.cli.main import X
                def later():
                    import toy.cli.main
                    try:
                        from toy.user import run
                    except ImportError:
                        from toy.system import board
                class Lazy:
                    def __enter__(self):
                        with open("x"):
                            match 1:
                                case 1:
                                    import toy.binfmt.interp
                importlib.import_module("toy.cli.main")
                """,
            "toy/user/run.py": "",
            "toy/system/board.py": "",
            "toy/binfmt/interp.py": "",
        },
    )
    assert [p.split(": ", 2)[:2] for p in problems] == [
        [f"{tmp_path}/toy/loader/elf.py:3", "toy.loader.elf imports toy.cli.main"],
        [f"{tmp_path}/toy/loader/elf.py:5", "toy.loader.elf imports toy.cli.main"],
        [f"{tmp_path}/toy/loader/elf.py:7", "toy.loader.elf imports toy.user.run"],
        [f"{tmp_path}/toy/loader/elf.py:9", "toy.loader.elf imports toy.system.board"],
        [f"{tmp_path}/toy/loader/elf.py:15", "toy.loader.elf imports toy.binfmt.interp"],
        [f"{tmp_path}/toy/loader/elf.py:16", "toy.loader.elf imports toy.cli.main"],
    ]


def test_siblings_do_not_import_each_other_but_binfmt_may_use_user(tmp_path: Path) -> None:
    problems = violations_of(
        tmp_path,
        {
            "toy/user/run.py": "from toy.system import board\nfrom toy.loader import elf\n",
            "toy/system/board.py": "import toy.user.run\n",
            "toy/binfmt/interp.py": "from toy.user.run import main\nfrom toy.cpu.spec import x\n",
            "toy/cpu/spec.py": "",
            "toy/cli/main.py": "from toy.user import run\nfrom toy.system import board\n",
            "toy/loader/elf.py": "",
        },
    )
    assert [p.split(": ", 2)[1] for p in problems] == [
        "toy.system.board imports toy.user.run",
        "toy.user.run imports toy.system.board",
    ]
    assert "user may import only user, loader, cpu" in problems[1]


def test_relative_imports_and_from_package_import_submodule_are_resolved(tmp_path: Path) -> None:
    top = make_tree(
        tmp_path,
        {
            "toy/loader/elf.py": "from . import stack\nfrom .stack import push\n",
            "toy/loader/stack.py": "from ..cpu import spec\nfrom .. import cpu\n",
            "toy/cpu/spec.py": "from toy import loader\nfrom ..loader import elf\n",
        },
    )
    graph = import_graph(top)
    explicit = sorted((e.source, e.target, e.line) for e in graph.edges if e.explicit)
    assert explicit == [
        ("toy.cpu.spec", "toy.loader", 1),
        ("toy.cpu.spec", "toy.loader.elf", 2),
        ("toy.loader.elf", "toy.loader.stack", 1),  # `from . import stack`: the module
        ("toy.loader.elf", "toy.loader.stack", 2),
        ("toy.loader.stack", "toy.cpu", 2),
        ("toy.loader.stack", "toy.cpu.spec", 1),
    ]
    assert [p.line for p in layering_violations(graph, TOY)] == [1, 2]


def test_an_import_of_a_module_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    problems = violations_of(tmp_path, {"toy/cli/main.py": "def f():\n    import toy.gone\n"})
    assert problems == [
        f"{tmp_path}/toy/cli/main.py:2: toy.cli.main imports toy.gone, which does not exist"
    ]


def test_a_package_in_no_layer_is_reported(tmp_path: Path) -> None:
    problems = violations_of(tmp_path, {"toy/extra/thing.py": ""})
    assert problems == [
        f"{tmp_path}/toy/extra/__init__.py:1: toy.extra is in no layer of "
        "cli -> user | system | binfmt -> loader -> cpu",
        f"{tmp_path}/toy/extra/thing.py:1: toy.extra is in no layer of "
        "cli -> user | system | binfmt -> loader -> cpu",
    ]


def test_a_cycle_through_a_function_local_import(tmp_path: Path) -> None:
    cycles = cycles_of(
        tmp_path,
        {
            "toy/loader/a.py": "from toy.loader.b import f\n",
            "toy/loader/b.py": "def f():\n    from toy.loader import a\n",
        },
    )
    assert cycles == [
        "import cycle toy.loader.a -> toy.loader.b -> toy.loader.a:\n"
        f"  toy.loader.a -> toy.loader.b  ({tmp_path}/toy/loader/a.py:1)\n"
        f"  toy.loader.b -> toy.loader.a  ({tmp_path}/toy/loader/b.py:2)"
    ]


def test_a_cycle_through_type_checking_imports(tmp_path: Path) -> None:
    cycles = cycles_of(
        tmp_path,
        {
            "toy/user/a.py": """\
                import typing
                if typing.TYPE_CHECKING:
                    from toy.user.b import B
                """,
            "toy/user/b.py": "from toy.user.a import A\n",
        },
    )
    assert len(cycles) == 1 and cycles[0].startswith(
        "import cycle toy.user.a -> toy.user.b -> toy.user.a:"
    )


def test_a_package_init_and_its_submodule(tmp_path: Path) -> None:
    # cpu/__init__ imports arm, which takes Spec from the half-run cpu/__init__
    cycles = cycles_of(
        tmp_path,
        {
            "toy/cpu/__init__.py": "class Spec: ...\nfrom toy.cpu.arm import ARM\n",
            "toy/cpu/arm.py": "from toy.cpu import Spec\nARM = Spec()\n",
        },
    )
    assert cycles == [
        "import cycle toy.cpu -> toy.cpu.arm -> toy.cpu:\n"
        f"  toy.cpu -> toy.cpu.arm  ({tmp_path}/toy/cpu/__init__.py:2)\n"
        f"  toy.cpu.arm -> toy.cpu  ({tmp_path}/toy/cpu/arm.py:1)"
    ]


def test_a_package_init_reached_through_its_submodule(tmp_path: Path) -> None:
    # importing toy.user.run runs toy/user/__init__.py first, which imports the loader
    cycles = cycles_of(
        tmp_path,
        {
            "toy/user/__init__.py": "from toy.loader.elf import load\n",
            "toy/user/run.py": "",
            "toy/loader/elf.py": "def load():\n    import toy.user.run\n",
        },
    )
    assert cycles == [
        "import cycle toy.loader.elf -> toy.user -> toy.loader.elf:\n"
        f"  toy.loader.elf -> toy.user  ({tmp_path}/toy/loader/elf.py:2: importing below "
        "toy.user runs its __init__)\n"
        f"  toy.user -> toy.loader.elf  ({tmp_path}/toy/user/__init__.py:1)"
    ]


def test_a_package_init_importing_submodules_that_use_siblings_is_no_cycle(
    tmp_path: Path,
) -> None:
    # the package is in sys.modules before its __init__ runs, so a submodule reaching a
    # sibling needs only its __path__: Python runs this without trouble
    cycles = cycles_of(
        tmp_path,
        {
            "toy/cpu/__init__.py": "from toy.cpu.arm import ARM\nfrom toy.cpu import riscv\n",
            "toy/cpu/arm.py": "from toy.cpu.spec import Spec\nfrom . import spec\nARM = 1\n",
            "toy/cpu/riscv.py": "import toy.cpu.spec\n",
            "toy/cpu/spec.py": "class Spec: ...\n",
        },
    )
    assert cycles == []


def test_a_longer_cycle_is_one_report_naming_its_tangle(tmp_path: Path) -> None:
    cycles = cycles_of(
        tmp_path,
        {
            "toy/loader/a.py": "import toy.loader.b\nimport toy.loader.d\n",
            "toy/loader/b.py": "import toy.loader.c\n",
            "toy/loader/c.py": "import toy.loader.a\n",
            "toy/loader/d.py": "import toy.loader.a\n",
        },
    )
    assert len(cycles) == 1
    assert cycles[0].startswith("import cycle toy.loader.a -> toy.loader.d -> toy.loader.a:")
    assert cycles[0].endswith(
        "(one of the cycles among 4 modules: toy.loader.a, toy.loader.b, toy.loader.c, "
        "toy.loader.d)"
    )


def test_stdlib_names_are_found(tmp_path: Path) -> None:
    top = make_tree(
        tmp_path, {"toy/user/time.py": "", "toy/user/clock.py": "", "toy/signal/x.py": ""}
    )
    assert sorted(m.name for m in stdlib_named(import_graph(top).modules.values())) == [
        "toy.signal",
        "toy.user.time",
    ]


def test_ancestors() -> None:
    assert ancestors("a.b.c") == ["a", "a.b"]
    assert ancestors("a") == []
