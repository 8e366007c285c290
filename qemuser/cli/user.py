"""qemuser-aarch64 / qemuser-riscv64: qemu-user's command line.

Options come before the program; everything after the program belongs to the guest. Each option
also has qemu-user's environment variable. Errors are one line and exit status 1.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import click

from qemuser import __version__
from qemuser.cpu import CPUS
from qemuser.loader.elf import LoadError
from qemuser.syscalls.config import DEFAULT_STACK_SIZE, RunConfig

LOG_ITEMS = {
    "in_asm": "show target assembly code for each compiled TB",
    "strace": "log every system call (same as -strace)",
    "unimp": "log unimplemented functionality (unsupported system calls)",
    "page": "dump the guest's memory layout at start",
}


class UsageError(Exception):
    pass


def parse_size(text: str) -> int:
    """qemu's sizes: a number with an optional k/M/G suffix (binary)."""
    units = {"k": 1 << 10, "K": 1 << 10, "m": 1 << 20, "M": 1 << 20, "g": 1 << 30, "G": 1 << 30}
    t = text.strip()
    factor = 1
    if t and t[-1] in units:
        factor = units[t[-1]]
        t = t[:-1]
    try:
        value = int(t, 0) * factor
    except ValueError:
        raise UsageError(f"invalid stack size '{text}'") from None
    if value <= 0:
        raise UsageError(f"invalid stack size '{text}'")
    return value


def parse_log_items(text: str) -> frozenset[str]:
    items = frozenset(i.strip() for i in text.split(",") if i.strip())
    unknown = sorted(items - set(LOG_ITEMS) - {"help"})
    if unknown:
        raise UsageError(f"unknown log item '{unknown[0]}' (try -d help)")
    return items


@dataclass
class Settings:
    sysroot: str | None = None
    set_env: tuple[str, ...] = ()
    unset_env: tuple[str, ...] = ()
    argv0: str | None = None
    cpu: str | None = None
    stack_size: int = DEFAULT_STACK_SIZE
    strace: bool = False
    log_items: frozenset[str] = frozenset()
    log_file: str | None = None


def from_environment(arch: str) -> Settings:
    env = os.environ
    s = Settings()
    if "QEMU_LD_PREFIX" in env:
        s.sysroot = env["QEMU_LD_PREFIX"]
    elif os.path.isdir(f"/usr/{CPUS[arch].name}-linux-gnu"):
        s.sysroot = f"/usr/{CPUS[arch].name}-linux-gnu"
    if "QEMU_SET_ENV" in env:
        s.set_env = tuple(e for e in env["QEMU_SET_ENV"].split(",") if e)
    if "QEMU_UNSET_ENV" in env:
        s.unset_env = tuple(e for e in env["QEMU_UNSET_ENV"].split(",") if e)
    s.cpu = env.get("QEMU_CPU") or None
    if "QEMU_STACK_SIZE" in env:
        s.stack_size = parse_size(env["QEMU_STACK_SIZE"])
    if env.get("QEMU_STRACE"):
        s.strace = True
    if "QEMU_LOG" in env:
        s.log_items = parse_log_items(env["QEMU_LOG"])
    s.log_file = env.get("QEMU_LOG_FILENAME") or None
    return s


def guest_environment(settings: Settings) -> list[bytes]:
    env = dict(os.environb)
    for name in (b"QEMU_LD_PREFIX",):
        pass
    for item in settings.set_env:
        name, _, value = item.partition("=")
        env[os.fsencode(name)] = os.fsencode(value)
    for name in settings.unset_env:
        env.pop(os.fsencode(name), None)
    return [k + b"=" + v for k, v in env.items()]


def cpu_help(arch: str) -> str:
    spec = CPUS[arch]
    lines = [f"Available CPUs ({arch}):"]
    for i, m in enumerate(spec.models):
        default = " (default)" if i == 0 else ""
        lines.append(f"  {m.name:<14} {m.description}{default}")
    return "\n".join(lines)


def log_help() -> str:
    lines = ["Log items (comma separated):"]
    lines += [f"{name:<10} {text}" for name, text in LOG_ITEMS.items()]
    return "\n".join(lines)


def usage(arch: str) -> str:
    return f"""usage: qemuser-{arch} [options] program [arguments...]
Linux CPU emulator (qemu-user compatible), {arch} guests on this host

Options and associated environment variables:

Argument             Env-variable      Description
-h                                     print this help
-help                                  print this help
-L path              QEMU_LD_PREFIX    set the elf interpreter prefix to 'path'
                                       (default: /usr/{arch}-linux-gnu when it exists)
-s size              QEMU_STACK_SIZE   set the stack size to 'size' bytes
-cpu model           QEMU_CPU          select CPU (-cpu help for list)
-E var=value         QEMU_SET_ENV      sets targets environment variable (see below)
-U var               QEMU_UNSET_ENV    unsets targets environment variable (see below)
-0 argv0             QEMU_ARGV0        forces target process argv[0] to be 'argv0'
-d item[,...]        QEMU_LOG          enable logging of specified items (use '-d help' for a list)
-D logfile           QEMU_LOG_FILENAME write logs to 'logfile' (default stderr)
-strace              QEMU_STRACE       log system calls
-version             QEMU_VERSION      display version information and exit

Defaults:
QEMU_LD_PREFIX  = /usr/{arch}-linux-gnu
QEMU_STACK_SIZE = {DEFAULT_STACK_SIZE} byte

You can use -E and -U options or the QEMU_SET_ENV and QEMU_UNSET_ENV
environment variables to set and unset environment variables for the target process.
It is possible to provide several variables by separating them by commas in getsubopt(3)
style."""


# option -> takes a value?
OPTIONS = {
    "-h": False, "-help": False, "--help": False, "-L": True, "-s": True, "-cpu": True,
    "-E": True, "-U": True, "-0": True, "-d": True, "-D": True, "-strace": False,
    "-version": False, "--version": False,
}


def parse_args(arch: str, args: list[str]) -> tuple[Settings, str, list[str]] | str:
    """Parse qemu-user style arguments. Returns (settings, program, guest args), or text to
    print and exit 0 with (help, version, lists)."""
    s = from_environment(arch)
    argv0 = os.environ.get("QEMU_ARGV0") or None
    i = 0
    set_env = list(s.set_env)
    unset_env = list(s.unset_env)
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "--":
            i += 1
            break
        name = "-" + arg.lstrip("-") if arg.startswith("--") and arg not in OPTIONS else arg
        if name not in OPTIONS:
            raise UsageError(f"unknown option '{arg}' (try -h)")
        value = None
        if OPTIONS[name]:
            if i + 1 >= len(args):
                raise UsageError(f"option '{arg}' needs an argument")
            value = args[i + 1]
            i += 2
        else:
            i += 1
        if name in ("-h", "-help", "--help"):
            return usage(arch)
        if name in ("-version", "--version"):
            return f"qemuser-{arch} version {__version__} (qemu-user compatible)"
        if name == "-L":
            s.sysroot = value
        elif name == "-s":
            s.stack_size = parse_size(value)
        elif name == "-cpu":
            if value == "help":
                return cpu_help(arch)
            s.cpu = value
        elif name == "-E":
            set_env += [e for e in value.split(",") if e]
        elif name == "-U":
            unset_env += [e for e in value.split(",") if e]
        elif name == "-0":
            argv0 = value
        elif name == "-d":
            items = parse_log_items(value)
            if "help" in items:
                return log_help()
            s.log_items = items
        elif name == "-D":
            s.log_file = value
        elif name == "-strace":
            s.strace = True
    s.set_env = tuple(set_env)
    s.unset_env = tuple(unset_env)
    s.argv0 = argv0
    if "strace" in s.log_items:
        s.strace = True
    if s.cpu is not None:
        try:
            CPUS[arch].model(s.cpu)
        except KeyError:
            raise UsageError(f"unable to find CPU model '{s.cpu}' (try -cpu help)") from None
    if i >= len(args):
        raise UsageError("no program given (try -h)")
    return s, args[i], args[i + 1 :]


def build_config(arch: str, settings: Settings, program: str, guest_args: list[str]) -> RunConfig:
    argv0 = settings.argv0 if settings.argv0 is not None else program
    return RunConfig(
        arch=arch,
        program=program,
        argv=[os.fsencode(argv0)] + [os.fsencode(a) for a in guest_args],
        env=guest_environment(settings),
        sysroot=settings.sysroot,
        cpu_model=settings.cpu,
        stack_size=settings.stack_size,
        strace=settings.strace,
        log_items=settings.log_items,
        log_file=settings.log_file,
    )


def main_for(arch: str, args: list[str] | None = None) -> int:
    prog = f"qemuser-{arch}"
    try:
        parsed = parse_args(arch, sys.argv[1:] if args is None else args)
        if isinstance(parsed, str):
            click.echo(parsed)
            return 0
        settings, program, guest_args = parsed
        config = build_config(arch, settings, program, guest_args)
        from qemuser.syscalls.emulator import run

        return run(config)
    except UsageError as exc:
        click.echo(f"{prog}: {exc}", err=True)
        return 1
    except LoadError as exc:
        click.echo(f"{prog}: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130


def main_aarch64() -> None:
    sys.exit(main_for("aarch64"))


def main_riscv64() -> None:
    sys.exit(main_for("riscv64"))
