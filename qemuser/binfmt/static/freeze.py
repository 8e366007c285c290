"""Freeze the Python side of the static interpreter: run by build.py under Debian's python3.11.

It must run under the Python whose libpython3.11.a is linked in: the code objects it marshals are
that interpreter's bytecode, and the stdlib sources it takes are that installation's (a stdlib of
another 3.11.x could call C functions this libpython lacks).

    python3.11 -I -S freeze.py OUTDIR ROOT... --path DIR... --exclude MODULE... --patch MODULE=FILE

finds every module the roots import (modulefinder, which also follows imports inside functions and
try blocks), and writes into OUTDIR:
  blob.bin    the marshalled code objects, back to back;
  frozen.c    the frozen-module table over blob.bin (included with .incbin, so the bytes land in
              .rodata as they are);
  modules.txt one line per module: name, kind (source, package, namespace, extension,
              builtin), file;
and prints a JSON summary. `--patch` replaces one module's source text before compiling it.
"""

from __future__ import annotations

import importlib.machinery
import json
import marshal
import modulefinder
import sys
from pathlib import Path


class Finder(modulefinder.ModuleFinder):
    """ModuleFinder that also takes namespace packages (a directory without __init__.py), as
    qemuser's own packages may be: frozen, such a package is an empty regular one."""

    def find_module(self, name, path, parent=None):  # type: ignore[no-untyped-def]
        search = self.path if path is None else path
        if path is not None or name not in sys.builtin_module_names:
            spec = importlib.machinery.PathFinder.find_spec(name, search)
            if spec is not None and spec.loader is None and spec.submodule_search_locations:
                where = list(spec.submodule_search_locations)[0]
                return None, where, ("", "", modulefinder._PKG_DIRECTORY)
        return super().find_module(name, path, parent)

    def load_package(self, fqname, pathname):  # type: ignore[no-untyped-def]
        if (Path(pathname) / "__init__.py").exists():
            return super().load_package(fqname, pathname)
        module = self.add_module(fqname)
        module.__file__ = pathname  # a directory: main() freezes it as an empty package
        module.__path__ = [pathname]
        return module


def collect(roots: list[str], path: list[str], exclude: list[str]) -> modulefinder.ModuleFinder:
    """`pkg.*` roots take every module file under the package, except the `exclude` prefixes."""
    finder = Finder(path=path)
    for name in roots:
        if name.endswith(".*"):
            finder.import_hook(name[:-2])
            package = finder.modules[name[:-2]]
            for directory in package.__path__:
                for child in sorted(Path(directory).rglob("*.py")):
                    parts = child.relative_to(directory).with_suffix("").parts
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    if not parts or any(not p.isidentifier() for p in parts):
                        continue
                    full = ".".join((name[:-2], *parts))
                    if any(full == e or full.startswith(e + ".") for e in exclude):
                        continue
                    try:
                        finder.import_hook(full)
                    except ImportError:
                        continue  # an optional part (imports what is not installed)
        else:
            finder.import_hook(name)
    return finder


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    roots: list[str] = []
    path: list[str] = []
    patches: dict[str, str] = {}
    exclude: list[str] = []
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg == "--path":
            path.append(argv[index + 1])
            index += 2
        elif arg == "--exclude":
            exclude.append(argv[index + 1])
            index += 2
        elif arg == "--patch":
            name, _, file = argv[index + 1].partition("=")
            patches[name] = Path(file).read_text()
            index += 2
        else:
            roots.append(arg)
            index += 1
    path += [p for p in sys.path if p]  # then this Python's own stdlib
    finder = collect(roots, path, exclude)

    blob = bytearray()
    entries = []
    lines = []
    extensions = []
    for name in sorted(finder.modules):
        module = finder.modules[name]
        file = module.__file__
        is_package = module.__path__ is not None
        if file is None:
            lines.append(f"{name} builtin -")
            continue
        if Path(file).is_dir():
            source: str | bytes = b""  # a namespace package
        elif not file.endswith(".py"):
            extensions.append(name)
            lines.append(f"{name} extension {file}")
            continue
        else:
            source = patches.pop(name, None) or Path(file).read_bytes()
        # the file name in tracebacks: the module's path below its root, as a hint
        shown = "<frozen " + name.replace(".", "/") + ("/__init__" if is_package else "") + ">"
        code = compile(source, shown, "exec", dont_inherit=True, optimize=0)
        data = marshal.dumps(code)
        entries.append((name, len(blob), len(data), is_package))
        blob += data
        kind = "namespace" if Path(file).is_dir() else "package" if is_package else "source"
        lines.append(f"{name} {kind} {file}")
    if patches:
        print(f"freeze: patched modules not found: {sorted(patches)}", file=sys.stderr)
        return 1

    out.mkdir(parents=True, exist_ok=True)
    (out / "blob.bin").write_bytes(bytes(blob))
    table = [
        "/* Generated by qemuser/binfmt/static/freeze.py: do not edit. */",
        "#include <Python.h>",
        '#include "frozen.h"',
        "/* The code objects, as they are, in .rodata: mapped at exec, paged in on use. */",
        '__asm__(".section .rodata\\n.balign 16\\n.globl qemuser_frozen_blob\\n"',
        f'        "qemuser_frozen_blob:\\n.incbin \\"{out / "blob.bin"}\\"\\n.previous\\n");',
        "extern const unsigned char qemuser_frozen_blob[];",
        "const struct _frozen qemuser_frozen[] = {",
    ]
    for name, offset, size, is_package in entries:
        table.append(
            f'    {{"{name}", qemuser_frozen_blob + {offset}, {size}, {int(is_package)}, 0}},'
        )
    table += ["    {0, 0, 0, 0, 0},", "};", ""]
    (out / "frozen.c").write_text("\n".join(table))
    (out / "modules.txt").write_text("\n".join(lines) + "\n")
    bad = sorted(finder.badmodules)
    print(
        json.dumps(
            {
                "modules": len(entries),
                "bytes": len(blob),
                "extensions": extensions,
                "missing": bad,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
