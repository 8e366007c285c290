"""The program binfmt_misc runs for a foreign binary: the kernel's argv becomes a RunConfig.

The kernel runs `interpreter [argv0-if-P] ...` as follows (fs/binfmt_misc.c):
  without P: interpreter, filename, argv[1], argv[2], ...      (argv[0] is lost; qemu uses filename)
  with P:    interpreter, filename, argv[0], argv[1], ...
Linux >= 5.12 tells which with AT_FLAGS bit 0 in the interpreter's own auxv. With O (and C, which
implies it) the kernel also passes an open fd of the binary as AT_EXECFD. Our interpreter is a
script (see system.write_interpreter), so sys.argv[0] is the script and filename is sys.argv[1];
the auxv is that of the Python running it, which the kernel built with the same flags.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass

AT_NULL = 0
AT_EXECFD = 2
AT_FLAGS = 8
AT_FLAGS_PRESERVE_ARGV0 = 1


@dataclass(frozen=True)
class KernelCall:
    """What the kernel told the interpreter."""

    filename: bytes  # the path the binary was executed by (as given to execve)
    argv: list[bytes]  # the guest's argv, argv[0] included
    exec_fd: int | None
    preserve_argv0: bool


def read_auxv(path: str = "/proc/self/auxv") -> dict[int, int]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    auxv = {}
    for key, value in struct.iter_unpack("<QQ", data[: len(data) // 16 * 16]):
        if key == AT_NULL:
            break
        auxv[key] = value
    return auxv


def preserve_flag_from_proc(arch: str) -> bool:
    """Older kernels lack AT_FLAGS: read our handler's flags, when binfmt_misc is visible."""
    try:
        with open(f"/proc/sys/fs/binfmt_misc/qemuser-{arch}") as f:
            text = f.read()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags:"):
            return "P" in line
    return False


def parse_kernel_call(args: list[bytes], auxv: dict[int, int], preserve: bool | None) -> KernelCall:
    """`args` is our argv after the interpreter itself; `preserve` overrides AT_FLAGS (None: the
    auxv decides)."""
    if not args:
        raise ValueError("no binary given (this program is run by binfmt_misc)")
    if preserve is None:
        preserve = bool(auxv.get(AT_FLAGS, 0) & AT_FLAGS_PRESERVE_ARGV0)
    filename = args[0]
    if preserve and len(args) >= 2:
        argv = args[1:]
    else:
        argv = [filename] + args[1:]
    return KernelCall(
        filename=filename, argv=argv, exec_fd=auxv.get(AT_EXECFD), preserve_argv0=preserve
    )


def main(settings_json: str, args: list[str] | None = None) -> int:
    """Entry of the generated interpreter script; returns the guest's exit status."""
    from qemuser.cli.user import Done, UsageError, build_config, check_log_file, parse_args
    from qemuser.loader.elf import LoadError

    settings = json.loads(settings_json)
    arch: str = settings["arch"]
    prog = f"qemuser-binfmt-{arch}"
    raw = [os.fsencode(a) for a in (sys.argv[1:] if args is None else args)]
    try:
        auxv = read_auxv()
        preserve = None if AT_FLAGS in auxv else preserve_flag_from_proc(arch)
        call = parse_kernel_call(raw, auxv, preserve)
        filename = os.fsdecode(call.filename)
        # QEMU_* variables apply as with qemu-user under binfmt (QEMU_LD_PREFIX, QEMU_STRACE...)
        opts, _, _ = parse_args(arch, ["--", filename])
        if settings.get("sysroot"):
            opts.sysroot = settings["sysroot"]
        check_log_file(opts.log_file)
        config = build_config(opts, filename, [])
        config.argv = call.argv
        config.exec_fd = call.exec_fd
        config.preserve_argv0 = call.preserve_argv0
        from qemuser.syscalls.emulator import run

        return run(config)
    except Done as done:
        print(done.text)
        return 0
    except (UsageError, LoadError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("QEMUSER_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
