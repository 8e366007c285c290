"""qemuser-aarch64 / qemuser-riscv64: qemu-user's command line.

Options come before the program; everything after the program belongs to the guest. As in
qemu-user, each option has an environment variable that does the same; the variables are applied
first, so an option on the command line wins. `--foo` is accepted for `-foo`. Errors are one line
on stderr and exit status 1; the guest's own exit status (or fatal signal) is ours otherwise.
The options themselves are parsed by qemuser.user.options (the binfmt interpreter shares them).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from qemuser.loader.elf import LoadError
from qemuser.user.options import Done, UsageError, build_config, check_log_file, parse_args


def main_for(arch: str, args: list[str] | None = None) -> int:
    """Run qemuser-<arch> with `args` (default: sys.argv); returns the exit status."""
    prog = f"qemuser-{arch}"
    try:
        settings, program, guest_args = parse_args(arch, sys.argv[1:] if args is None else args)
        check_log_file(settings.log_file)
        config = build_config(settings, program, guest_args)
        from qemuser.user.run import run

        return run(config)
    except Done as done:
        try:
            print(done.text)
            if sys.stdout is not None:
                sys.stdout.flush()
        except BrokenPipeError:  # `-cpu help | head -1`: the reader left; nothing to add
            pass
        return 0
    except (UsageError, LoadError) as exc:
        print(f"{prog}: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug of ours: one line, unless a developer asks for the trace
        if os.environ.get("QEMUSER_DEBUG"):
            raise
        print(
            f"{prog}: internal error: {type(exc).__name__}: {one_line(str(exc))}", file=sys.stderr
        )
        return 1


def one_line(text: str) -> str:
    """`text` with its control characters escaped (\\n, \\t, \\x1b...): a file name may hold a
    newline, and an error stays one line whatever it quotes."""
    return "".join(repr(c)[1:-1] if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)


def exit_now(status: int) -> NoReturn:
    """End the process without the interpreter's teardown.

    Once the guest has exited nothing is left to clean up that the kernel does not (memory,
    fds, the engine), and tearing the interpreter down (module dicts, every object, the engines)
    cost ~25 ms: paid by every program a guest shell starts, since each foreign child is a copy
    of this process. Only Python's own buffers need flushing.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # Python's stand-in for an fd closed when we started
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout: nothing more can be said
            pass
    os._exit(status)


def main_aarch64() -> NoReturn:
    exit_now(main_for("aarch64"))


def main_riscv64() -> NoReturn:
    exit_now(main_for("riscv64"))
