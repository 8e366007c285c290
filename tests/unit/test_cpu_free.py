"""Unit tests that need no CPU import no unicorn (shared/DESIGN.md, Habits): struct layouts,
strace formatting, the registry and the import graph are checked without an engine, so they
stay fast and keep the layers they test free of it. The few unit tests that do need the CPU are
listed, with why, in tests/conftest.py (CPU_UNIT_TESTS).

Each module is imported in a fresh interpreter where importing unicorn raises; the failure
names the chain of imports that reached it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import CPU_UNIT_TESTS, ROOT

UNIT = Path(__file__).resolve().parent

# Run in the child: import each module named on the command line with unicorn refused, and
# print {module: the import chain that reached unicorn, or null}.
_PROBE = r"""
import importlib, json, sys, traceback

root = sys.argv[1]
class RefuseUnicorn:
    def find_spec(self, name, path=None, target=None):
        if name == "unicorn" or name.startswith("unicorn."):
            frames = [f for f in traceback.extract_stack()
                      if f.filename.startswith(root) and "importlib" not in f.filename]
            raise ImportError(" -> ".join(
                f"{f.filename[len(root) + 1:]}:{f.lineno}" for f in frames))
        return None

sys.meta_path.insert(0, RefuseUnicorn())
found = {}
for module in sys.argv[2:]:
    try:
        importlib.import_module(module)
        found[module] = None
    except ImportError as error:
        found[module] = str(error) or repr(error)
print(json.dumps(found))
"""


def unicorn_chains(modules: list[str]) -> dict[str, str | None]:
    """For each module, the chain of imports through which importing it reaches unicorn."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(ROOT), *modules],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def unit_modules() -> list[str]:
    return sorted(path.stem for path in UNIT.glob("test_*.py"))


def test_unit_tests_that_need_no_cpu_import_no_unicorn() -> None:
    pure = [name for name in unit_modules() if name not in CPU_UNIT_TESTS]
    chains = unicorn_chains([f"tests.unit.{name}" for name in pure])
    offenders = {module: chain for module, chain in chains.items() if chain is not None}
    assert not offenders, "\n".join(
        f"{module} imports unicorn: {chain}\n  (if it needs the CPU, add it to CPU_UNIT_TESTS in "
        "tests/conftest.py with why; else cut the chain)"
        for module, chain in offenders.items()
    )
    assert len(pure) >= 5  # the pure ones are the many (layouts, strace, registry, layering)


def test_the_unit_tests_listed_as_needing_the_cpu_do() -> None:
    # a stale entry would exempt a module from the check above; this also shows the probe
    # sees unicorn when it is imported
    assert set(CPU_UNIT_TESTS) <= set(unit_modules())
    chains = unicorn_chains([f"tests.unit.{name}" for name in sorted(CPU_UNIT_TESTS)])
    assert [module for module, chain in chains.items() if chain is None] == []
    assert chains["tests.unit.test_exit_checks"].startswith("tests/unit/test_exit_checks.py:")
