"""Helpers for the block-layer tests: our tools and QEMU's (Debian's qemu-utils) side by side."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qemuser.cli import img as img_cli
from qemuser.cli import imgio as io_cli

VENV_BIN = Path(sys.executable).parent

IN_PROCESS: dict[str, Callable[[list[str]], int]] = {
    "qemuser-img": img_cli.main,
    "qemuser-io": io_cli.main,
}


def need_qemu() -> None:
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        pytest.fail("QEMU's tools are missing: apt-get install qemu-utils (setup.sh does it)")


def _in_process(argv: list[str], cwd: Path | None) -> subprocess.CompletedProcess[str]:
    """Our front end's main() in this process: the console script's code without the
    interpreter's start-up, which is most of a short command's time."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = IN_PROCESS[argv[0]](argv[1:])
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())


def run(
    *args: str | Path,
    check: bool = True,
    cwd: Path | None = None,
    timeout: float = 60,
    script: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a tool. qemu-* are the host's; qemuser-img/-io run in this process unless `script`
    asks for the venv's console script (qemuser-nbd always runs as one)."""
    argv = [str(a) for a in args]
    if argv[0] in IN_PROCESS and not script:
        p = _in_process(argv, cwd)
    else:
        if argv[0].startswith("qemuser-"):
            argv[0] = str(VENV_BIN / argv[0])
        else:
            need_qemu()
        p = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{argv} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qemu_check(path: Path) -> str:
    """qemu-img check must find nothing wrong; returns its output."""
    p = run("qemu-img", "check", path, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No errors were found on the image." in p.stdout
    return p.stdout
