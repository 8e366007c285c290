"""qemuser-binfmt: register qemuser with binfmt_misc so foreign binaries run by name."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from qemuser.binfmt import system
from qemuser.binfmt.handler import (
    HANDLER_PREFIX,
    claims,
    debian_import,
    flags_for,
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


@cli.command()
@ARCH
@click.option("--persistent", is_flag=True, help="F flag: the kernel opens the interpreter now")
@click.option("--credential", is_flag=True, help="C flag (implies O): setuid binaries work")
@click.option("--open-binary", is_flag=True, help="O flag: the kernel passes an open fd")
@click.option("--preserve-argv0", is_flag=True, help="P flag: the guest sees its real argv[0]")
@click.option("--sysroot", "sysroots", multiple=True, metavar="ARCH=PATH", help="library root")
@click.option("--replace", is_flag=True, help="take over from another handler (given back later)")
def install(
    arches: tuple[str, ...],
    persistent: bool,
    credential: bool,
    open_binary: bool,
    preserve_argv0: bool,
    sysroots: tuple[str, ...],
    replace: bool,
) -> None:
    """Register the handlers (idempotent)."""
    roots = _sysroots(sysroots)
    system.require_root()
    system.ensure_mounted(system.BINFMT_DIR)
    for spec in _specs(arches):
        options = system.InstallOptions(
            preserve_argv0=preserve_argv0,
            credential=credential,
            persistent=persistent,
            open_binary=open_binary,
            sysroot=roots.get(spec.name),
            replace=replace,
        )
        click.echo(system.install(spec, options))


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
@click.option("--persistent", is_flag=True)
@click.option("--credential", is_flag=True)
@click.option("--open-binary", is_flag=True)
@click.option("--preserve-argv0", is_flag=True)
@click.option("--interpreter-dir", default=str(system.LIBEXEC_DIR), show_default=True)
def export(
    arches: tuple[str, ...],
    fmt: str,
    persistent: bool,
    credential: bool,
    open_binary: bool,
    preserve_argv0: bool,
    interpreter_dir: str,
) -> None:
    """Print a systemd binfmt.d line or a Debian update-binfmts import file per arch.

    The interpreter scripts are written by `install`; run it once before using the export."""
    flags = flags_for(
        preserve_argv0=preserve_argv0,
        credential=credential,
        persistent=persistent,
        open_binary=open_binary,
    )
    for spec in _specs(arches):
        interpreter = system.interpreter_path(spec, Path(interpreter_dir))
        handler = handler_for(spec, str(interpreter), flags)
        if fmt == "systemd":
            click.echo(systemd_line(handler))
        else:
            if len(arches) != 1:
                click.echo(f"# /usr/share/binfmts/{handler.name}")
            click.echo(debian_import(handler), nl=False)


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
