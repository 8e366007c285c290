"""qemuser-binfmt: register qemuser with binfmt_misc so foreign binaries run by name."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from qemuser.binfmt import system
from qemuser.binfmt.handler import (
    DEFAULT_FLAGS,
    HANDLER_PREFIX,
    FlagsError,
    choose_flags,
    claims,
    debian_import,
    handler_for,
    systemd_line,
)
from qemuser.cpu import CPUS, CpuSpec


def _specs(arches: tuple[str, ...]) -> list[CpuSpec]:
    return [CPUS[a] for a in (arches or tuple(CPUS))]


ARCH = click.option(
    "--arch",
    "arches",
    multiple=True,
    type=click.Choice(sorted(CPUS)),
    help="architecture (repeatable; default: all)",
)


def _sysroots(values: tuple[str, ...]) -> dict[str, str]:
    result = {}
    for value in values:
        arch, sep, path = value.partition("=")
        if not sep or arch not in CPUS or not path:
            raise click.BadParameter(f"'{value}' is not ARCH=PATH", param_hint="--sysroot")
        result[arch] = str(Path(path).resolve())
    return result


@click.group()
def cli() -> None:
    """Make foreign aarch64/riscv64 Linux binaries run by name through qemuser."""


def flag_options(command: Callable[..., None]) -> Callable[..., None]:
    """The flag choices of install and export: --flags in the kernel's letters, then one option
    per flag to add or remove it (the defaults are qemu-user-static's)."""
    options = [
        click.option(
            "--flags",
            "letters",
            metavar="LETTERS",
            help=f"binfmt_misc flags in the kernel's letters P, O, C, F (default {DEFAULT_FLAGS})",
        ),
        click.option(
            "--preserve-argv0/--no-preserve-argv0",
            default=None,
            help="P flag: the guest sees the argv[0] it was run with (default on)",
        ),
        click.option(
            "--open-binary/--no-open-binary",
            default=None,
            help="O flag: the kernel passes an open fd, so 0711 binaries run (default on)",
        ),
        click.option(
            "--credential/--no-credential",
            default=None,
            help="C flag (implies O): setuid binaries run as their owner (default off)",
        ),
        click.option(
            "--fix-binary/--no-fix-binary",
            "--persistent/--no-persistent",
            default=None,
            help="F flag: the kernel opens the interpreter now: it runs in chroots and "
            "containers (default on)",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _flags(
    letters: str | None,
    preserve_argv0: bool | None,
    open_binary: bool | None,
    credential: bool | None,
    fix_binary: bool | None,
) -> str:
    try:
        return choose_flags(
            letters,
            preserve_argv0=preserve_argv0,
            open_binary=open_binary,
            credential=credential,
            fix_binary=fix_binary,
        )
    except FlagsError as exc:
        raise system.BinfmtError(str(exc)) from None


def _note(text: str) -> None:
    click.echo(f"qemuser-binfmt: {text}", err=True)


@cli.command()
@ARCH
@flag_options
@click.option("--sysroot", "sysroots", multiple=True, metavar="ARCH=PATH", help="library root")
@click.option("--replace", is_flag=True, help="take over from another handler (given back later)")
def install(
    arches: tuple[str, ...],
    letters: str | None,
    preserve_argv0: bool | None,
    open_binary: bool | None,
    credential: bool | None,
    fix_binary: bool | None,
    sysroots: tuple[str, ...],
    replace: bool,
) -> None:
    """Register the handlers (idempotent)."""
    flags = _flags(letters, preserve_argv0, open_binary, credential, fix_binary)
    roots = _sysroots(sysroots)
    system.require_root()
    system.ensure_mounted(system.BINFMT_DIR)
    for spec in _specs(arches):
        options = system.InstallOptions(flags=flags, sysroot=roots.get(spec.name), replace=replace)
        click.echo(system.install(spec, options, log=_note))


@cli.command()
def build() -> None:
    """Build the self-contained static interpreter into its cache (install does it when
    needed; this is for setup scripts), and print its path."""
    from qemuser.binfmt.build import BuildError
    from qemuser.binfmt.build import build as build_static

    try:
        built = build_static(log=_note)
    except BuildError as exc:
        raise system.BinfmtError(f"cannot build the static interpreter: {exc}") from None
    how = "cached" if built.reused else f"built in {built.seconds:.0f} s"
    click.echo(f"{built.path} ({how})")


@cli.command()
@ARCH
def uninstall(arches: tuple[str, ...]) -> None:
    """Remove the handlers and give back any that --replace took over (idempotent)."""
    system.require_root()
    if not (system.BINFMT_DIR / "register").exists():
        click.echo("binfmt_misc is not mounted: nothing installed")
        return
    for spec in _specs(arches):
        click.echo(system.uninstall(spec))


@cli.command()
def status() -> None:
    """Show the handlers that take aarch64/riscv64 binaries, and who installed them."""
    root = system.BINFMT_DIR
    if not (root / "register").exists():
        raise system.BinfmtError(f"binfmt_misc is not mounted on {root}")
    state = (root / "status").read_text().strip()
    click.echo(f"binfmt_misc: {state}")
    handlers = system.entries(root)
    for spec in CPUS.values():
        mine = [h for h in handlers if claims(h, spec) or h.name == HANDLER_PREFIX + spec.name]
        if not mine:
            click.echo(f"{spec.name}: no handler")
        for h in mine:
            owner = "qemuser" if h.name.startswith(HANDLER_PREFIX) else "other"
            click.echo(
                f"{spec.name}: {h.name} [{owner}] {'enabled' if h.enabled else 'disabled'}"
                f" flags '{h.flags}' interpreter {h.interpreter}"
            )


@cli.command()
@ARCH
@click.option("--format", "fmt", type=click.Choice(["systemd", "debian"]), default="systemd")
@flag_options
@click.option("--interpreter-dir", default=str(system.LIBEXEC_DIR), show_default=True)
def export(
    arches: tuple[str, ...],
    fmt: str,
    letters: str | None,
    preserve_argv0: bool | None,
    open_binary: bool | None,
    credential: bool | None,
    fix_binary: bool | None,
    interpreter_dir: str,
) -> None:
    """Print a systemd binfmt.d line or a Debian update-binfmts import file per arch.

    The interpreters are written by `install`; run it once before using the export."""
    flags = _flags(letters, preserve_argv0, open_binary, credential, fix_binary)
    for spec in _specs(arches):
        interpreter = system.interpreter_path(spec, Path(interpreter_dir))
        handler = handler_for(spec, str(interpreter), flags)
        if fmt == "systemd":
            click.echo(systemd_line(handler))
        else:
            try:
                text = debian_import(handler)
            except FlagsError as exc:
                raise system.BinfmtError(str(exc)) from None
            if len(arches) != 1:
                click.echo(f"# /usr/share/binfmts/{handler.name}")
            click.echo(text, nl=False)


def main(args: list[str] | None = None) -> None:
    try:
        cli.main(args=args, prog_name="qemuser-binfmt", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except system.BinfmtError as exc:
        click.echo(f"qemuser-binfmt: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"qemuser-binfmt: {exc.strerror}: {exc.filename}", err=True)
        sys.exit(1)
