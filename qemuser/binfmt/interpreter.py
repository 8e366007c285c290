"""The Python half of the binfmt interpreter. The native half the kernel runs is normally the
static interpreter (static/main.c, whose boot.py calls main() here with the kernel's arguments);
when that cannot be built, launcher.c, which executes the Python script install writes.

The kernel runs `interpreter [argv0-if-P] ...` as follows (fs/binfmt_misc.c):
  without P: interpreter, filename, argv[1], argv[2], ...      (argv[0] is lost; qemu uses filename)
  with P:    interpreter, filename, argv[0], argv[1], ...
Linux >= 5.12 tells which with AT_FLAGS bit 0 in the interpreter's own auxv. With O (and C, which
implies it) the kernel also passes an open fd of the binary as AT_EXECFD. The native half reads
both from its auxv and passes them on as options before `--`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

AT_FLAGS_PRESERVE_ARGV0 = 1


@dataclass(frozen=True)
class KernelCall:
    """What the kernel told the interpreter."""

    filename: bytes  # the path the binary was executed by (as given to execve)
    argv: list[bytes]  # the guest's argv, argv[0] included
    exec_fd: int | None
    preserve_argv0: bool


@dataclass(frozen=True)
class LauncherArgs:
    """What the native launcher (launcher.c) read from its own auxv and from the chroot."""

    at_flags: int
    exec_fd: int | None
    root_fd: int | None  # the caller's chroot root, when it ran inside one
    cwd_fd: int | None
    rest: list[bytes]  # the kernel's arguments after the interpreter: filename, ...


def parse_launcher_args(args: list[bytes]) -> LauncherArgs:
    values = {b"--at-flags": 0, b"--execfd": -1, b"--root-fd": -1, b"--cwd-fd": -1}
    index = 0
    while index < len(args) and args[index] != b"--":
        key = args[index]
        if key not in values or index + 1 >= len(args):
            raise ValueError(f"bad launcher argument {key!r}")
        values[key] = int(args[index + 1])
        index += 2
    if index >= len(args):
        raise ValueError("launcher arguments lack '--'")

    def fd(key: bytes) -> int | None:
        return values[key] if values[key] >= 0 else None

    return LauncherArgs(
        at_flags=values[b"--at-flags"],
        exec_fd=fd(b"--execfd"),
        root_fd=fd(b"--root-fd"),
        cwd_fd=fd(b"--cwd-fd"),
        rest=args[index + 1 :],
    )


def parse_kernel_call(args: list[bytes], at_flags: int, exec_fd: int | None) -> KernelCall:
    """`args` is the kernel's argv after the interpreter itself: filename, [argv0 if P], args."""
    if not args:
        raise ValueError("no binary given (this program is run by binfmt_misc)")
    preserve = bool(at_flags & AT_FLAGS_PRESERVE_ARGV0)
    filename = args[0]
    argv = args[1:] if preserve and len(args) >= 2 else [filename] + args[1:]
    return KernelCall(filename=filename, argv=argv, exec_fd=exec_fd, preserve_argv0=preserve)


def _import_tree(package: str, skip: tuple[str, ...] = ()) -> None:
    """Import every module file under `package` (namespace packages included)."""
    import importlib
    from pathlib import Path

    top = Path(importlib.import_module(package).__file__).parent
    for path in sorted(top.rglob("*.py")):
        parts = path.relative_to(top.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[1:2] in skip or "tests" in parts or any("-" in p for p in parts):
            continue
        try:
            importlib.import_module(".".join(parts))
        except ImportError:
            continue  # an optional part of a third-party package


def preload() -> None:
    """Import everything the emulator may need, before a chroot hides our files: our modules
    (some are namespace packages, so go by the files), unicorn's per-arch modules (imported
    lazily), pyelftools, the codecs Python loads on demand, and libgcc_s."""
    import importlib

    _import_tree("qemuser", skip=(("cli",), ("system",)))
    _import_tree("unicorn")
    _import_tree("elftools")
    for name in ("encodings.idna", "encodings.ascii", "encodings.latin_1"):
        importlib.import_module(name)
    # glibc dlopens libgcc_s when a thread exits (pthread_exit unwinds): load it now, or our
    # helper threads abort the process once the chroot hides the host's copy.
    import ctypes
    import ctypes.util

    ctypes.CDLL(ctypes.util.find_library("gcc_s") or "libgcc_s.so.1")


def enter_chroot(root_fd: int, cwd_fd: int | None) -> None:
    """Go back into the caller's chroot, in its working directory."""
    os.fchdir(root_fd)
    os.chroot(".")
    os.chdir("/")
    if cwd_fd is not None:
        os.fchdir(cwd_fd)
        os.close(cwd_fd)
    os.close(root_fd)


def main(settings_json: str, args: list[str] | None = None) -> int:
    """Entry of the generated interpreter script; returns the guest's exit status."""
    from qemuser.loader.elf import LoadError
    from qemuser.user.options import Done, UsageError, build_config, check_log_file, parse_args

    settings = json.loads(settings_json)
    arch: str = settings["arch"]
    prog = f"qemuser-binfmt-{arch}"
    raw = [os.fsencode(a) for a in (sys.argv[1:] if args is None else args)]
    try:
        launcher = parse_launcher_args(raw)
        call = parse_kernel_call(launcher.rest, launcher.at_flags, launcher.exec_fd)
        filename = os.fsdecode(call.filename)
        # QEMU_* variables apply as with qemu-user under binfmt (QEMU_LD_PREFIX, QEMU_STRACE...)
        opts, _, _ = parse_args(arch, ["--", filename])
        if settings.get("sysroot"):
            opts.sysroot = settings["sysroot"]
        if launcher.root_fd is not None:
            opts.sysroot = None  # the chroot is the guest's whole world
            preload()
            enter_chroot(launcher.root_fd, launcher.cwd_fd)
        check_log_file(opts.log_file)
        config = build_config(opts, filename, [])
        config.argv = call.argv
        config.exec_fd = call.exec_fd
        config.preserve_argv0 = call.preserve_argv0
        from qemuser.user.run import run

        return run(config)
    except Done as done:
        print(done.text)
        return 0
    except (UsageError, LoadError, ValueError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("QEMUSER_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
