"""Build the self-contained static binfmt interpreter (static/main.c), once, into a cache.

Why one static executable (and not PyInstaller, staticx, Nuitka onefile or memfd tricks): with F
the kernel opens the interpreter at registration and runs it in the caller's mount namespace,
where none of our files, no Python and perhaps no /proc or writable /tmp exist; the one-file
bundlers unpack to a temporary directory on every run, and a dynamic executable needs its
PT_INTERP and libraries from the guest's filesystem. A static executable is mapped by the
kernel from the file it already holds open, so the Python code is frozen into its image.

Inputs, all from Debian packages or PyPI, nothing hand-written beyond static/*.c:
  - libpython3.11.a and the headers (libpython3.11-dev), Debian's stdlib (libpython3.11-stdlib);
  - the C sources of the extension modules Debian ships as shared objects (lib-dynload: _ctypes,
    mmap, resource, ...), from `apt-get source python3.11` through a private apt configuration
    whose deb-src lines mirror the machine's own Debian sources (the machine's are not touched);
  - libffi.a, libz.a, libexpat.a (libffi-dev, zlib1g-dev, libexpat1-dev);
  - libunicorn.a: the one the unicorn wheel ships (unicorn/lib/libunicorn.a), the same build as
    the libunicorn.so qemuser-aarch64 loads, so both run the same engine.

Cache layout (`cache_dir()`): cpython-src/ (the Modules/ of the source package), ext-<ver>/
(compiled extension objects), and one interp-<hash> per distinct input (the hash covers the
Python sources frozen in, static/*.c, the archives), so a changed qemuser rebuilds only the cheap
final step (freeze + link, seconds) and an unchanged one nothing at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).with_name("static")
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
LIBPYTHON = Path("/usr/lib/x86_64-linux-gnu/libpython3.11.a")
PYTHON_INCLUDE = Path("/usr/include/python3.11")
STATIC_LIBS = ("-lffi", "-lexpat", "-lz", "-lm", "-lpthread", "-ldl", "-lutil")

# The extension modules Debian builds as shared objects that qemuser (or what it imports) may
# load, and their sources under Modules/. Everything else of the stdlib's C side is already in
# libpython3.11.a (Debian's Modules/Setup: _struct, select, _socket, fcntl, math, zlib, ...).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "_ctypes": (
        "_ctypes/_ctypes.c",
        "_ctypes/callbacks.c",
        "_ctypes/callproc.c",
        "_ctypes/stgdict.c",
        "_ctypes/cfield.c",
    ),
    "mmap": ("mmapmodule.c",),
    "resource": ("resource.c",),
    "termios": ("termios.c",),
    "_typing": ("_typingmodule.c",),
    "_json": ("_json.c",),
    "_queue": ("_queuemodule.c",),
    "_contextvars": ("_contextvarsmodule.c",),
    "_posixshmem": ("_multiprocessing/posixshmem.c",),
}
# What CPython's setup.py defines for _ctypes when it finds a modern libffi (3.4 here).
CTYPES_DEFINES = (
    "-DHAVE_FFI_PREP_CIF_VAR=1",
    "-DHAVE_FFI_PREP_CLOSURE_LOC=1",
    "-DHAVE_FFI_CLOSURE_ALLOC=1",
)

# What the executable freezes in: the roots (`pkg.*`: every module of the package) and what to
# leave out (system mode, the other front ends, this build itself).
FREEZE_ROOTS = ("qemuser.binfmt.boot", "qemuser.cli.user", "qemuser.*", "unicorn.*", "encodings.*")
FREEZE_EXCLUDE = (
    "qemuser.system",
    "qemuser.cli.system",
    "qemuser.cli.system_devices",
    "qemuser.cli.binfmt",
    "qemuser.binfmt.build",
    "qemuser.binfmt.system",  # holds the settings marker, which must be in the image once
    "qemuser.binfmt.static",
    "unicorn.unicorn_py2",
)
# unicorn's binding finds libunicorn.so through files and importlib.resources, none of which
# exists here: its loader is replaced by one line (checked to match, so a new unicorn fails the
# build loudly instead of silently).
UNICORN_LOADER = "def __load_uc_lib() -> ctypes.CDLL:\n"
UNICORN_LOADER_NEW = (
    "def __load_uc_lib() -> ctypes.CDLL:\n"
    "    return ctypes.CDLL('libunicorn.so.2')  # qemuser static: linked in (binfmt/boot.py)\n"
    "\n\n"
    "def __load_uc_lib_from_files() -> ctypes.CDLL:\n"
)


class BuildError(Exception):
    """The static interpreter cannot be built here: one line saying why."""


@dataclass(frozen=True)
class Built:
    path: Path
    seconds: float
    reused: bool


def cache_dir() -> Path:
    return Path(os.environ.get("QEMUSER_BINFMT_CACHE", "/var/cache/qemuser/binfmt-static"))


def _run(command: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise BuildError(f"{what}: {command[0]} is not installed") from None
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or "?").splitlines()
        errors = [line for line in lines if "error" in line.lower()] or lines
        raise BuildError(f"{what}: {errors[-1]}")
    return result


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One build at a time (pytest workers, two installs)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _unicorn_archive() -> Path:
    import unicorn

    archive = Path(unicorn.__file__).parent / "lib" / "libunicorn.a"
    if not archive.is_file():
        raise BuildError(f"{archive} is missing (the unicorn wheel from PyPI ships it)")
    return archive


def _debian_version(package: str) -> str:
    result = _run(["dpkg-query", "-W", "-f", "${Version}", package], f"{package} is not installed")
    return result.stdout.strip()


def deb_src_lines(apt: Path = Path("/etc/apt")) -> list[str]:
    """deb-src lines for the machine's Debian archives (one-line .list and deb822 .sources)."""
    lines = []
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and not line.startswith((" ", "#")):
                        fields[key.strip().lower()] = value.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                signed = fields.get("signed-by", "")
                option = f"[signed-by={signed}] " if signed.startswith("/") else ""
                for uri in fields.get("uris", "").split():
                    for suite in fields.get("suites", "").split():
                        lines.append(
                            f"deb-src {option}{uri} {suite} {fields.get('components', '')}"
                        )
        else:
            for line in text.splitlines():
                if line.strip().startswith("deb "):
                    lines.append("deb-src " + line.strip()[4:])
    # only Debian's own archives (deb.debian.org, a mirror, snapshot.debian.org) carry its source
    return [line for line in lines if "/debian" in line]


def _cpython_sources(cache: Path, log: Callable[[str], None]) -> Path:
    """Modules/ of Debian's python3.11 source package (the version installed, else the nearest
    the mirror still has: only the extension modules' C files are used)."""
    modules = cache / "cpython-src" / "Modules"
    if (modules / "_ctypes" / "_ctypes.c").is_file():
        return modules
    lines = deb_src_lines()
    if not lines:
        raise BuildError("no Debian archive in /etc/apt to fetch python3.11's source from")
    with tempfile.TemporaryDirectory(prefix="qemuser-apt-") as tmp:
        work = Path(tmp)
        for sub in ("lists/partial", "cache/archives/partial", "etc/sources.list.d", "prefs"):
            (work / sub).mkdir(parents=True)
        (work / "etc/sources.list").write_text("\n".join(lines) + "\n")
        (work / "status").touch()
        (work / "apt.conf").write_text(
            f'Dir::State "{work}";\nDir::State::Lists "{work}/lists";\n'
            f'Dir::State::status "{work}/status";\nDir::Cache "{work}/cache";\n'
            f'Dir::Etc::SourceList "{work}/etc/sources.list";\n'
            f'Dir::Etc::SourceParts "{work}/etc/sources.list.d";\n'
            f'Dir::Etc::Preferences "{work}/prefs";\nDir::Etc::PreferencesParts "{work}/prefs";\n'
        )
        env = {**os.environ, "APT_CONFIG": str(work / "apt.conf")}
        log("fetching python3.11's source (apt-get source, private apt configuration)")
        # one archive failing (a security mirror without sources, say) is not fatal: the
        # versions the others list are tried below
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        shown = _run(["apt-cache", "showsrc", "python3.11"], "apt-cache showsrc", env=env).stdout
        versions = re.findall(r"^Version: (\S+)", shown, re.MULTILINE)
        wanted = _debian_version("libpython3.11-dev")
        upstream = wanted.split("-")[0]
        order = [wanted] + sorted((v for v in versions if v != wanted), reverse=True)
        fetched = None
        for version in order:
            if not version.startswith(upstream):
                continue
            result = subprocess.run(
                ["apt-get", "source", "--download-only", f"python3.11={version}"],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
            )
            if result.returncode == 0:
                fetched = version
                break
        if fetched is None:
            raise BuildError(f"apt-get source python3.11 ({upstream}) failed for every version")
        dsc = next(work.glob("python3.11_*.dsc"))
        _run(["dpkg-source", "-x", str(dsc), str(work / "src")], "dpkg-source -x", cwd=work)
        target = cache / "cpython-src"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copytree(work / "src" / "Modules", target / "Modules")
        (target / "VERSION").write_text(fetched + "\n")
    return modules


def _extension_objects(cache: Path, log: Callable[[str], None]) -> list[Path]:
    modules = _cpython_sources(cache, log)
    version = _debian_version("libpython3.11-dev")
    out = cache / f"ext-{version}"
    done = out / "done"
    objects = [
        out / f"{name}-{Path(src).stem}.o" for name, srcs in EXTENSIONS.items() for src in srcs
    ]
    if done.exists():
        return objects
    out.mkdir(parents=True, exist_ok=True)
    log(f"compiling {len(EXTENSIONS)} extension modules into the executable")
    flags = [
        "-O2",
        "-fwrapv",
        "-DNDEBUG",
        "-DPy_BUILD_CORE_BUILTIN",
        f"-I{PYTHON_INCLUDE}",
        f"-I{PYTHON_INCLUDE}/internal",
        f"-I{modules / '_ctypes'}",
        *CTYPES_DEFINES,
    ]
    jobs = []
    for name, sources in EXTENSIONS.items():
        for src in sources:
            obj = out / f"{name}-{Path(src).stem}.o"
            command = ["cc", *flags, "-c", str(modules / src), "-o", str(obj)]
            jobs.append((command, f"compiling {src}"))
    _parallel(jobs)
    done.touch()
    return objects


def _parallel(jobs: list[tuple[list[str], str]]) -> None:
    """Run the compilers side by side, one per core (at least two)."""
    running: list[tuple[subprocess.Popen, str]] = []
    for command, what in jobs:
        while len(running) >= max(2, os.cpu_count() or 2):
            _reap(running)
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise BuildError(f"{what}: {command[0]} is not installed") from None
        running.append((process, what))
    while running:
        _reap(running)


def _reap(running: list[tuple[subprocess.Popen, str]]) -> None:
    process, what = running.pop(0)
    _, err = process.communicate()
    if process.returncode != 0:
        for other, _ in running:
            other.wait()
        last = (err.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise BuildError(f"{what}: {last}")


def _site_dirs() -> list[str]:
    """Where unicorn, pyelftools and qemuser itself are imported from in this environment."""
    import elftools
    import unicorn

    import qemuser

    dirs = [
        str(Path(qemuser.__file__).parent.parent),
        str(Path(unicorn.__file__).parent.parent),
        str(Path(elftools.__file__).parent.parent),
    ]
    return list(dict.fromkeys(dirs))


LIBC_ARCHIVE = Path("/usr/lib/x86_64-linux-gnu/libc.a")


def _symbols_c(freeze_list: Path, unicorn_archive: Path) -> str:
    """The table of C functions ctypes may ask for: the uc_* names the binding and qemuser
    mention that the archive defines, and every libc function named (as an attribute or as a
    string: `_libc["pread64"]`) by a module of ours that uses the libc binding. A name missing
    here fails at import, loudly (boot.StaticLibrary), never silently."""
    defined = _run(["nm", "--defined-only", str(unicorn_archive)], "nm libunicorn.a").stdout
    uc_defined = set(re.findall(r" T (uc_\w+)$", defined, re.MULTILINE))
    libc_text = _run(["nm", "--defined-only", str(LIBC_ARCHIVE)], "nm libc.a").stdout
    libc_defined = set(re.findall(r" [TW] ([a-z_][a-z0-9_]*)$", libc_text, re.MULTILINE))
    mentioned: set[str] = set()
    libc: set[str] = set()
    for line in freeze_list.read_text().splitlines():
        name, kind, file = line.split(" ", 2)
        if kind not in ("source", "package") or not name.startswith(("unicorn", "qemuser")):
            continue
        text = Path(file).read_text(errors="replace")
        mentioned |= set(re.findall(r"\b(uc_[a-z0-9_]+)\b", text))
        if name.startswith("qemuser") and re.search(r"\b(_libc|LIBC)\b", text):
            libc |= set(re.findall(r"\b([a-z_][a-z0-9_]*)\b", text)) & libc_defined
    names = sorted(mentioned & uc_defined) + sorted(libc - mentioned)
    lines = [
        "/* Generated by qemuser/binfmt/build.py: the functions ctypes can ask for. */",
        '#include "symbols.h"',
        *(f"extern void {n}(void);" for n in names),
        "const struct qemuser_symbol qemuser_symbols[] = {",
        *(f'    {{"{n}", (void *){n}}},' for n in names),
        "    {0, 0},",
        "};",
        "",
    ]
    return "\n".join(lines)


def _inittab_c() -> str:
    lines = ["/* Generated by qemuser/binfmt/build.py. */", "#include <Python.h>"]
    lines += [f"extern PyObject *PyInit_{name}(void);" for name in EXTENSIONS]
    lines.append("struct _inittab qemuser_inittab[] = {")
    lines += [f'    {{"{name}", PyInit_{name}}},' for name in EXTENSIONS]
    lines += ["    {0, 0},", "};", ""]
    return "\n".join(lines)


def _input_key(unicorn_archive: Path) -> str:
    """A digest of everything the executable is made of, known before building it: our sources
    (every .py of qemuser, static/*, this file), the versions of the Debian packages and of the
    Python packages it takes, the archives. The frozen code itself cannot be the key: marshal's
    output varies from run to run (its reference flags follow refcounts)."""
    import elftools
    import unicorn

    import qemuser

    h = hashlib.sha256()
    for package in ("libpython3.11-dev", "libpython3.11-stdlib", "libffi-dev", "libc6-dev"):
        h.update(f"{package}={_debian_version(package)}\0".encode())
    h.update(f"unicorn={unicorn.__version__} elftools={elftools.__version__}\0".encode())
    stat = unicorn_archive.stat()
    h.update(f"{unicorn_archive}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    top = Path(qemuser.__file__).parent
    files = sorted(top.rglob("*.py")) + sorted(STATIC_DIR.iterdir()) + [Path(__file__)]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(top)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


KEEP_BUILDS = 3  # interp-* kept: the newest, and a few that an install may still be copying


def _prune(cache: Path) -> None:
    """Under the lock: drop what a killed build left behind and all but the newest builds."""
    for stale in cache.glob("qemuser-freeze-*"):
        shutil.rmtree(stale, ignore_errors=True)
    builds = sorted(cache.glob("interp-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[KEEP_BUILDS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def build(cache: Path | None = None, log: Callable[[str], None] | None = None) -> Built:
    """The static interpreter for this qemuser, built unless the cache has it."""
    cache = cache or cache_dir()
    say = log or (lambda text: None)
    started = time.monotonic()
    for needed, package in (
        (DEBIAN_PYTHON, "python3.11"),
        (LIBPYTHON, "libpython3.11-dev"),
        (Path("/usr/lib/x86_64-linux-gnu/libffi.a"), "libffi-dev"),
        (Path("/usr/lib/x86_64-linux-gnu/libexpat.a"), "libexpat1-dev"),
        (Path("/usr/lib/x86_64-linux-gnu/libz.a"), "zlib1g-dev"),
    ):
        if not needed.exists():
            raise BuildError(f"{needed} is missing (apt-get install {package})")
    unicorn_archive = _unicorn_archive()
    key = _input_key(unicorn_archive)
    target = cache / f"interp-{key}" / "qemuser-binfmt-static"
    if target.exists():
        return Built(target, time.monotonic() - started, reused=True)
    with _locked(cache):
        if target.exists():  # built by whoever held the lock
            return Built(target, time.monotonic() - started, reused=True)
        _prune(cache)
        objects = _extension_objects(cache, say)
        with tempfile.TemporaryDirectory(prefix="qemuser-freeze-", dir=cache) as tmp:
            work = Path(tmp)
            patched = work / "unicorn_py3_unicorn.py"
            import unicorn.unicorn_py3.unicorn as binding

            source = Path(binding.__file__).read_text()
            if source.count(UNICORN_LOADER) != 1:
                raise BuildError("unicorn's binding changed: its library loader was not found")
            patched.write_text(source.replace(UNICORN_LOADER, UNICORN_LOADER_NEW))
            command = [str(DEBIAN_PYTHON), "-I", "-S", str(STATIC_DIR / "freeze.py"), str(work)]
            command += list(FREEZE_ROOTS)
            for directory in _site_dirs():
                command += ["--path", directory]
            for name in FREEZE_EXCLUDE:
                command += ["--exclude", name]
            command += ["--patch", f"unicorn.unicorn_py3.unicorn={patched}"]
            summary = json.loads(_run(command, "freezing the Python modules").stdout)
            missing = sorted(set(summary["extensions"]) - set(EXTENSIONS))
            (work / "symbols.c").write_text(_symbols_c(work / "modules.txt", unicorn_archive))
            (work / "inittab.c").write_text(_inittab_c())
            say(
                f"linking the static interpreter ({summary['modules']} frozen modules,"
                f" {summary['bytes'] // 1024} KiB of code objects)"
            )
            flags = ["-O2", "-fwrapv", "-DNDEBUG", f"-I{PYTHON_INCLUDE}", f"-I{STATIC_DIR}"]
            compiled = []
            for name in ("frozen.c", "symbols.c", "inittab.c"):
                compiled.append(work / name.replace(".c", ".o"))
                _run(["cc", *flags, "-c", str(work / name), "-o", str(compiled[-1])], name)
            main_o = work / "main.o"
            _run(["cc", *flags, "-c", str(STATIC_DIR / "main.c"), "-o", str(main_o)], "main.c")
            out = work / "qemuser-binfmt-static"
            link = ["cc", "-static", "-s", "-o", str(out), str(main_o), *map(str, compiled)]
            link += [*map(str, objects), str(LIBPYTHON), str(unicorn_archive), *STATIC_LIBS]
            _run(link, "linking the static interpreter")
            target.parent.mkdir(parents=True, exist_ok=True)
            (target.parent / "modules.txt").write_text((work / "modules.txt").read_text())
            (target.parent / "missing-extensions.txt").write_text("\n".join(missing) + "\n")
            out.chmod(0o755)
            out.replace(target)
    return Built(target, time.monotonic() - started, reused=False)


def main() -> int:
    """`python -m qemuser.binfmt.build`: build (or find) the static interpreter, print its path."""
    try:
        built = build(log=lambda text: print(f"qemuser-binfmt: {text}", file=sys.stderr))
    except BuildError as exc:
        print(f"qemuser-binfmt: cannot build the static interpreter: {exc}", file=sys.stderr)
        return 1
    print(built.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
