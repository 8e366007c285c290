"""The import graph of a package, read from its source with `ast` (nothing is imported), and
the two rules tests/unit/test_layering.py enforces on it: imports point one way down a stack
of layers, and no import cycle exists.

Every import statement counts, wherever it is: module level, inside a function (often written
to dodge a cycle, which is why it must count), under `if TYPE_CHECKING:`, inside `try`. So do
`importlib.import_module("literal")` calls. Relative imports are resolved, and
`from pkg import name` points at the submodule `pkg.name` when there is one, else at `pkg`.

The graph's edges are "running this module runs that one first", as Python executes them:
importing `a.b.c` runs `a`, then `a.b`, then `a.b.c`. So an import adds an edge to its target
and to each package above the target, except the importer's own enclosing packages: those
were already started before the importer ran (Python puts a package in sys.modules before
running its `__init__`), so reaching one of their submodules needs only their `__path__`.
Reading a *name* out of a package is different: `from a.b import Spec` inside `a/b/x.py` needs
`a/b/__init__.py` to have run to the line defining Spec, and that edge (`a.b.x -> a.b`) is what
closes a package `__init__` <-> submodule cycle when the `__init__` imports `x`.
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Module:
    name: str  # dotted: "qemuser.syscalls.fs"; a package's name is that of its __init__
    path: Path | None  # None for a namespace package (a folder of modules, no __init__.py)
    is_package: bool


@dataclass(frozen=True)
class Edge:
    """`source` runs `target` first, because of the import at `path`:`line`."""

    source: str
    target: str
    path: Path
    line: int
    explicit: bool  # the module the statement names (False: a package above it)


@dataclass(frozen=True)
class Layering:
    """Layers from the bottom up; a module may import its own top-level package and anything
    in a lower layer. Packages sharing a layer are siblings that must not import each other,
    unless (importer, imported) is in `sibling_imports`. The root package (its `__init__`) sits
    below every layer; a top-level package in no layer is an error."""

    root: str
    layers: tuple[tuple[str, ...], ...]
    sibling_imports: frozenset[tuple[str, str]] = frozenset()

    def rank(self) -> dict[str, int]:
        return {package: i for i, layer in enumerate(self.layers) for package in layer}

    def describe(self) -> str:
        return " -> ".join(" | ".join(layer) for layer in reversed(self.layers))


def find_modules(top: Path) -> dict[str, Module]:
    """Every module and package under the package folder `top` (its name is the folder's)."""
    modules: dict[str, Module] = {}
    base = top.parent
    for path in sorted(top.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(base).with_suffix("").parts
        if any(not part.isidentifier() for part in parts):
            continue  # not importable (a script such as setup-thing.py)
        if parts[-1] == "__init__":
            name = ".".join(parts[:-1])
            modules[name] = Module(name, path, is_package=True)
        else:
            name = ".".join(parts)
            modules.setdefault(name, Module(name, path, is_package=False))
        # folders above a module are packages even without an __init__.py (namespace packages)
        for depth in range(1, len(parts) - 1):
            folder = ".".join(parts[:depth])
            modules.setdefault(folder, Module(folder, None, is_package=True))
    return modules


def ancestors(name: str) -> list[str]:
    """The packages above a dotted name, outermost first: a.b.c -> [a, a.b]."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class _Graph:
    def __init__(self, modules: dict[str, Module], root: str) -> None:
        self.modules = modules
        self.root = root
        self.edges: list[Edge] = []
        self.problems: list[Problem] = []

    def _ours(self, name: str) -> bool:
        return name == self.root or name.startswith(self.root + ".")

    def _add(self, module: Module, target: str, line: int, *, reads_names: bool) -> None:
        """Edges for running `target` from `module`. `reads_names`: the statement takes
        names out of `target` itself (so it needs it run, even if it encloses `module`)."""
        assert module.path is not None
        if target not in self.modules:
            self.problems.append(
                Problem(module.path, line, f"{module.name} imports {target}, which does not exist")
            )
            return
        started = set(ancestors(module.name))
        if module.is_package:
            started.add(module.name)
        if target != module.name and (reads_names or target not in started):
            self.edges.append(Edge(module.name, target, module.path, line, explicit=True))
        for package in ancestors(target):
            if package not in started and package != module.name:
                self.edges.append(Edge(module.name, package, module.path, line, explicit=False))

    def _resolve_relative(self, module: Module, level: int, name: str | None) -> str | None:
        package = module.name if module.is_package else module.name.rpartition(".")[0]
        parts = package.split(".")
        if level - 1 >= len(parts):
            return None
        base = ".".join(parts[: len(parts) - (level - 1)])
        return f"{base}.{name}" if name else base

    def read(self, module: Module) -> None:
        assert module.path is not None
        source = module.path.read_bytes()
        try:
            tree = ast.parse(source, filename=str(module.path))
        except SyntaxError as error:
            self.problems.append(Problem(module.path, error.lineno or 0, f"cannot parse: {error}"))
            return
        # import statements are statements, so only statements need visiting (a third of the
        # nodes); calls of import_module are expressions, looked for where the name occurs
        nodes = _statements(tree)
        if b"import_module" in source:
            nodes = itertools.chain(nodes, (n for n in ast.walk(tree) if isinstance(n, ast.Call)))
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if self._ours(alias.name):
                        # `import a.b.c` binds `a`; whether a.b.c's names are read is not
                        # known, so count it as read
                        self._add(module, alias.name, node.lineno, reads_names=True)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    source = self._resolve_relative(module, node.level, node.module)
                    if source is None:
                        self.problems.append(
                            Problem(module.path, node.lineno, "relative import above the root")
                        )
                        continue
                else:
                    source = node.module or ""
                if not self._ours(source):
                    continue
                names_read = False
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if alias.name != "*" and submodule in self.modules:
                        self._add(module, submodule, node.lineno, reads_names=True)
                    else:
                        names_read = True
                if names_read:
                    self._add(module, source, node.lineno, reads_names=True)
            elif isinstance(node, ast.Call) and _is_import_module(node):
                literal = node.args[0]
                assert isinstance(literal, ast.Constant) and isinstance(literal.value, str)
                if self._ours(literal.value):
                    self._add(module, literal.value, node.lineno, reads_names=True)


def _statements(tree: ast.Module) -> Iterator[ast.AST]:
    """Every statement of a module, at any depth (in functions, classes, if, try, with...)."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(
            child
            for child in ast.iter_child_nodes(node)
            if isinstance(child, ast.stmt | ast.ExceptHandler | ast.match_case)
        )


def _is_import_module(node: ast.Call) -> bool:
    """`importlib.import_module("a.b")` or `import_module("a.b")` with a literal name."""
    function = node.func
    named = (isinstance(function, ast.Attribute) and function.attr == "import_module") or (
        isinstance(function, ast.Name) and function.id == "import_module"
    )
    return (
        named
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


@dataclass(frozen=True)
class ImportGraph:
    modules: dict[str, Module]
    edges: tuple[Edge, ...]
    problems: tuple[Problem, ...]  # imports of modules that do not exist, unparsable files


def import_graph(top: Path) -> ImportGraph:
    """The import graph of the package whose folder is `top`."""
    modules = find_modules(top)
    graph = _Graph(modules, top.name)
    for module in modules.values():
        if module.path is not None:
            graph.read(module)
    problems = sorted(graph.problems, key=lambda problem: (str(problem.path), problem.line))
    return ImportGraph(modules, tuple(graph.edges), tuple(problems))


def layering_violations(graph: ImportGraph, layering: Layering) -> list[Problem]:
    """Imports that point up the stack or sideways between siblings, one per statement."""
    rank = layering.rank()
    allowed = {
        package: {
            other
            for other, other_rank in rank.items()
            if other_rank < rank[package]
            or other == package
            or (package, other) in layering.sibling_imports
        }
        for package in rank
    }
    problems: list[Problem] = []
    for module in graph.modules.values():
        package = _top_package(module.name, layering.root)
        if package is not None and package not in rank and module.path is not None:
            problems.append(
                Problem(
                    module.path,
                    1,
                    f"{layering.root}.{package} is in no layer of {layering.describe()}",
                )
            )
    for edge in graph.edges:
        if not edge.explicit:
            continue  # the packages above a target share its layer
        source = _top_package(edge.source, layering.root)
        target = _top_package(edge.target, layering.root)
        if target is None:
            continue  # the root package's __init__, below everything
        if source is None:
            message = f"the root package {layering.root} may import nothing of its own"
        elif source not in rank or target not in rank:
            continue  # reported above
        elif target in allowed[source]:
            continue
        else:
            may = ", ".join(sorted(allowed[source], key=lambda p: (-rank[p], p)))
            message = f"{source} may import only {may} (layering {layering.describe()})"
        problems.append(
            Problem(edge.path, edge.line, f"{edge.source} imports {edge.target}: {message}")
        )
    return sorted(problems, key=lambda problem: (str(problem.path), problem.line))


def _top_package(name: str, root: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == root else None


@dataclass(frozen=True)
class Cycle:
    edges: tuple[Edge, ...]  # a shortest cycle, from the tangle's first module back to it
    tangle: tuple[str, ...]  # every module of its strongly connected component: breaking this
    # one cycle may leave others among them

    def __str__(self) -> str:
        names = " -> ".join([self.edges[0].source] + [edge.target for edge in self.edges])
        steps = "".join(
            f"\n  {edge.source} -> {edge.target}  ({edge.path}:{edge.line}"
            + ("" if edge.explicit else f": importing below {edge.target} runs its __init__")
            + ")"
            for edge in self.edges
        )
        others = ""
        if len(self.tangle) > len(self.edges):
            others = f"\n  (one of the cycles among {len(self.tangle)} modules: "
            others += ", ".join(self.tangle) + ")"
        return f"import cycle {names}:{steps}{others}"


def import_cycles(graph: ImportGraph) -> list[Cycle]:
    """One shortest cycle per strongly connected component of the graph, each edge with the
    file and line of its import statement."""
    successors: dict[str, dict[str, Edge]] = {}
    # the first statement (by line) that makes each edge, direct imports before implied ones
    for edge in sorted(graph.edges, key=lambda e: (e.source, e.target, not e.explicit, e.line)):
        if edge.source != edge.target:
            successors.setdefault(edge.source, {}).setdefault(edge.target, edge)
    cycles = []
    for component in _components(successors):
        if len(component) > 1:
            start = min(component)
            edges = _shortest_cycle(start, successors, set(component))
            cycles.append(Cycle(tuple(edges), tuple(sorted(component))))
    return sorted(cycles, key=lambda cycle: cycle.tangle)


def _components(successors: dict[str, dict[str, Edge]]) -> Iterator[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    nodes = sorted(set(successors) | {t for targets in successors.values() for t in targets})
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(successors.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(successors.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    yield component


def _shortest_cycle(
    start: str, successors: dict[str, dict[str, Edge]], component: set[str]
) -> list[Edge]:
    """Breadth-first from `start` back to it, inside its component."""
    came_by: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target, edge in sorted(successors.get(node, {}).items()):
            if target not in component:
                continue
            if target == start:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, came_by[path[0].source])
                return path
            if target not in came_by:
                came_by[target] = edge
                queue.append(target)
    raise AssertionError(f"{start} is in a component without a cycle")


def stdlib_named(modules: Iterable[Module]) -> list[Module]:
    """Modules and packages named like a standard-library module (sys.stdlib_module_names)."""
    return [
        module
        for module in modules
        if "." in module.name and module.name.rpartition(".")[2] in sys.stdlib_module_names
    ]
