"""qemu-user's options, parsed into a RunConfig: shared by qemuser-<arch> (qemuser.cli.user) and
the binfmt interpreter (qemuser.binfmt.interpreter).

Options come before the program; everything after the program belongs to the guest. As in
qemu-user, each option has an environment variable that does the same; the variables are applied
first, so an option on the command line wins. `--foo` is accepted for `-foo`. Errors are one line
on stderr and exit status 1; the guest's own exit status (or fatal signal) is ours otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from qemuser import __version__
from qemuser.cpu import CPUS
from qemuser.cpu.properties import (
    CpuOptionError,
    parse_properties,
    properties_help,
    split_cpu_option,
)
from qemuser.user.config import DEFAULT_STACK_SIZE, RunConfig

LOG_ITEMS = {
    "in_asm": "show target assembly code for each compiled TB",
    "strace": "log every system call (same as -strace)",
    "unimp": "log unimplemented functionality (unsupported system calls)",
    "page": "dump the guest's memory layout at start",
}

# qemu-user never gives the guest less than 32 pages of stack (STACK_LOWER_LIMIT in
# linux-user/elfload.c), whatever -s says.
MIN_STACK_SIZE = 32 * 4096
# Any size is taken, as qemu-user takes it: it is the guest's RLIMIT_STACK. How much of it is
# mapped at start is the loader's choice (qemuser.user.process: STACK_MAPPED_MAX).
MAX_STACK_SIZE = (1 << 64) - 1  # RLIM_INFINITY: the largest value the limit can hold

SIZE_SUFFIXES = {"k": 1 << 10, "K": 1 << 10, "m": 1 << 20, "M": 1 << 20, "g": 1 << 30, "G": 1 << 30}
SIZE_SUFFIXES |= {"t": 1 << 40, "T": 1 << 40}  # qemu takes "-s 1T" (issue 11 defect 12)


class UsageError(Exception):
    """A bad command line or environment variable: one line for the user, exit status 1."""


class Done(Exception):
    """An option that prints something (help, version, lists) and ends the run with status 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def parse_size(text: str) -> int:
    """A stack size as qemu takes it: a number (decimal, 0x hex, 0 octal) with an optional
    k/M/G/T binary suffix. Raises UsageError for anything else, zero, or a size no rlimit holds."""
    digits = text.strip()
    factor = 1
    if digits and digits[-1] in SIZE_SUFFIXES:
        factor = SIZE_SUFFIXES[digits[-1]]
        digits = digits[:-1]
    try:
        value = int(digits, 0) * factor
    except ValueError:
        raise UsageError(f"invalid stack size '{text}'") from None
    if value <= 0:
        raise UsageError(f"invalid stack size '{text}'")
    if value > MAX_STACK_SIZE:
        raise UsageError(f"stack size '{text}' is too large")
    return max(value, MIN_STACK_SIZE)


def parse_log_items(text: str) -> frozenset[str]:
    """`-d` items, comma separated; "help" is kept for the caller to act on."""
    items = frozenset(item.strip() for item in text.split(",") if item.strip())
    unknown = sorted(items - set(LOG_ITEMS) - {"help"})
    if unknown:
        raise UsageError(f"unknown log item '{unknown[0]}' (try -d help)")
    return items


def split_assignments(text: str) -> list[str]:
    """`-E a=1,b=2`: qemu splits on commas (getsubopt style); every item needs a '='."""
    items = [item for item in text.split(",") if item]
    for item in items:
        # "=x" is a variable with an empty name: qemu's envlist takes it, so does execve
        if "=" not in item:
            raise UsageError(f"'{item}' is not var=value")
    return items


def split_names(text: str) -> list[str]:
    """`-U a,b`: variable names only."""
    items = [item for item in text.split(",") if item]
    for item in items:
        if "=" in item:
            raise UsageError(f"'{item}' is not a variable name")
    return items


@dataclass
class Settings:
    """What the options asked for, before it becomes a RunConfig."""

    arch: str
    sysroot: str | None = None
    # -E / -U in the order given: (name, value) sets, (name, None) unsets
    env_edits: list[tuple[str, str | None]] = field(default_factory=list)
    argv0: str | None = None
    cpu: str | None = None
    stack_size: int = DEFAULT_STACK_SIZE
    strace: bool = False
    log_items: frozenset[str] = frozenset()
    log_file: str | None = None
    gdb: str | None = None


def default_sysroot(arch: str) -> str | None:
    """Debian's cross sysroot for the arch, when it is installed."""
    path = f"/usr/{CPUS[arch].name}-linux-gnu"
    return path if os.path.isdir(path) else None


# ---- what each option does (shared by the flag and its environment variable) ----------------


def _set_sysroot(s: Settings, value: str) -> None:
    s.sysroot = value or None


def _set_stack_size(s: Settings, value: str) -> None:
    s.stack_size = parse_size(value)


def _set_cpu(s: Settings, value: str) -> None:
    if value == "help":
        raise Done(cpu_help(s.arch))
    # MODEL,NAME=VALUE,...: QEMU's CPU properties (qemuser.cpu.properties)
    name, items = split_cpu_option(value)
    try:
        model = CPUS[s.arch].model(name)
    except KeyError:
        raise UsageError(f"unable to find CPU model '{name}' (try -cpu help)") from None
    try:
        parse_properties(s.arch, model.name, items)
    except CpuOptionError as exc:
        raise UsageError(str(exc)) from None
    s.cpu = value


def _set_env(s: Settings, value: str) -> None:
    for item in split_assignments(value):
        name, _, text = item.partition("=")
        s.env_edits.append((name, text))


def _unset_env(s: Settings, value: str) -> None:
    s.env_edits += [(name, None) for name in split_names(value)]


def _set_argv0(s: Settings, value: str) -> None:
    s.argv0 = value


def _set_log_items(s: Settings, value: str) -> None:
    items = parse_log_items(value)
    if "help" in items:
        raise Done(log_help())
    s.log_items = items


def _set_log_file(s: Settings, value: str) -> None:
    s.log_file = value or None


def _set_gdb(s: Settings, value: str) -> None:
    if not value:
        raise UsageError("-g needs a port number or a socket path")
    s.gdb = value


def _set_strace(s: Settings, _value: str) -> None:
    s.strace = True


def _show_help(s: Settings, _value: str) -> None:
    raise Done(usage(s.arch))


def _show_version(s: Settings, _value: str) -> None:
    raise Done(version_text(s.arch))


# eq=False: these are compared by identity, and every start would compile the generated
# __eq__/__hash__ (dataclass methods are compiled at import, ~0.3 ms each).
@dataclass(frozen=True, eq=False)
class Option:
    """One command-line option and the qemu-user environment variable that does the same."""

    flag: str
    env: str | None  # qemu-user's environment variable for the same thing
    metavar: str | None  # None: the option takes no value
    apply: Callable[[Settings, str], None]
    help: str


OPTIONS: tuple[Option, ...] = (
    Option("-h", None, None, _show_help, "print this help"),
    Option("-help", None, None, _show_help, "print this help"),
    Option(
        "-L", "QEMU_LD_PREFIX", "path", _set_sysroot, "set the elf interpreter prefix to 'path'"
    ),
    Option(
        "-s",
        "QEMU_STACK_SIZE",
        "size",
        _set_stack_size,
        "set the stack size to 'size' bytes (k/M/G/T suffixes)",
    ),
    Option("-cpu", "QEMU_CPU", "model", _set_cpu, "select CPU (-cpu help for list)"),
    Option(
        "-E", "QEMU_SET_ENV", "var=value", _set_env, "sets targets environment variable (see below)"
    ),
    Option(
        "-U", "QEMU_UNSET_ENV", "var", _unset_env, "unsets targets environment variable (see below)"
    ),
    Option("-0", "QEMU_ARGV0", "argv0", _set_argv0, "forces target process argv[0] to be 'argv0'"),
    Option(
        "-d",
        "QEMU_LOG",
        "item[,...]",
        _set_log_items,
        "enable logging of specified items (use '-d help' for a list)",
    ),
    Option(
        "-D",
        "QEMU_LOG_FILENAME",
        "logfile",
        _set_log_file,
        "write logs to 'logfile' (default stderr)",
    ),
    Option("-g", "QEMU_GDB", "port", _set_gdb, "wait gdb connection to 'port'"),
    Option("-strace", "QEMU_STRACE", None, _set_strace, "log system calls"),
    Option("-version", "QEMU_VERSION", None, _show_version, "display version information and exit"),
)
OPTIONS_BY_FLAG = {option.flag: option for option in OPTIONS}


def cpu_help(arch: str) -> str:
    spec = CPUS[arch]
    lines = [f"Available CPUs ({arch}):"]
    for index, model in enumerate(spec.models):
        default = " (default)" if index == 0 else ""
        lines.append(f"  {model.name:<14} {model.description}{default}")
    for model in spec.models:
        if model.features:
            lines.append(f"Features of {model.name}:")
            lines += [f"  {name:<10} {text}" for name, text in model.features]
        lines += properties_help(arch, model.name)
    return "\n".join(lines)


def log_help() -> str:
    lines = ["Log items (comma separated):"]
    lines += [f"{name:<10} {text}" for name, text in LOG_ITEMS.items()]
    return "\n".join(lines)


def version_text(arch: str) -> str:
    return (
        f"qemuser-{arch} version {__version__} (qemu-user compatible)\n"
        "A Python re-creation of QEMU's user mode on the unicorn CPU emulator"
    )


def usage(arch: str) -> str:
    rows = []
    for option in OPTIONS:
        argument = f"{option.flag} {option.metavar}" if option.metavar else option.flag
        rows.append(f"{argument:<20} {option.env or '':<17} {option.help}")
    table = "\n".join(rows)
    sysroot = default_sysroot(arch) or "(none)"
    return f"""usage: qemuser-{arch} [options] program [arguments...]
Linux CPU emulator (qemu-user compatible): runs {arch} Linux programs on this host

Options and associated environment variables:

Argument             Env-variable      Description
{table}

Defaults:
QEMU_LD_PREFIX  = {sysroot}
QEMU_STACK_SIZE = {DEFAULT_STACK_SIZE} byte

You can use -E and -U options or the QEMU_SET_ENV and QEMU_UNSET_ENV
environment variables to set and unset environment variables for the target process.
It is possible to provide several variables by separating them by commas in getsubopt(3)
style. Setting a variable more than once, or setting and unsetting it, is allowed:
  -E var1=val2 -E var2=val2 -U LD_PRELOAD -E LD_DEBUG=1
  QEMU_SET_ENV=var1=val2,var2=val2 QEMU_UNSET_ENV=LD_PRELOAD,LD_DEBUG"""


def parse_args(
    arch: str, args: list[str], environ: dict[str, str] | None = None
) -> tuple[Settings, str, list[str]]:
    """Parse qemu-user style arguments (after the environment variables).

    Returns (settings, program, guest args). Raises UsageError for a bad command line and Done
    for options that only print something.
    """
    env = os.environ if environ is None else environ
    settings = Settings(arch=arch, sysroot=default_sysroot(arch))
    for option in OPTIONS:
        if option.env is None or option.env not in env:
            continue
        try:
            option.apply(settings, env[option.env])
        except UsageError as exc:
            raise UsageError(f"{exc} (from {option.env})") from None
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("-") or arg == "-":
            break
        index += 1
        if arg == "--":
            break
        # qemu treats --foo as -foo
        flag = arg[1:] if arg.startswith("--") else arg
        option = OPTIONS_BY_FLAG.get(flag)
        if option is None:
            raise UsageError(f"unknown option '{arg}' (try -h)")
        value = ""
        if option.metavar is not None:
            if index >= len(args):
                raise UsageError(f"option '{arg}' needs an argument ({option.metavar})")
            value = args[index]
            index += 1
        option.apply(settings, value)
    if "strace" in settings.log_items:
        settings.strace = True
    if index >= len(args):
        raise UsageError("no program given (try -h)")
    return settings, args[index], args[index + 1 :]


def guest_environment(settings: Settings, environ: dict[bytes, bytes] | None = None) -> list[bytes]:
    """The host environment with -E/-U applied in their order: a variable that -E changes keeps
    its place, a new one comes last (env(1)'s order; qemu-user's envlist reverses the host's)."""
    env = dict(os.environb if environ is None else environ)
    for name, value in settings.env_edits:
        if value is None:
            env.pop(os.fsencode(name), None)
        else:
            env[os.fsencode(name)] = os.fsencode(value)
    return [name + b"=" + value for name, value in env.items()]


def build_config(settings: Settings, program: str, guest_args: list[str]) -> RunConfig:
    argv0 = settings.argv0 if settings.argv0 is not None else program
    return RunConfig(
        arch=settings.arch,
        program=program,
        argv=[os.fsencode(argv0)] + [os.fsencode(a) for a in guest_args],
        env=guest_environment(settings),
        sysroot=settings.sysroot,
        cpu_model=settings.cpu,
        stack_size=settings.stack_size,
        strace=settings.strace,
        log_items=settings.log_items,
        log_file=settings.log_file,
        gdb=settings.gdb,
    )


def check_log_file(path: str | None) -> None:
    """Fail now, with one line, when the -D file cannot be written (qemu exits too)."""
    if path is None:
        return
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot open log file '{path}': {exc.strerror}") from None
