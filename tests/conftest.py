"""Shared helpers: where fixtures are built, and how to run a guest under qemuser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "out"
VENV_BIN = Path(sys.executable).parent
ARCHES = ("aarch64", "riscv64")
FLAVOURS = ("static", "dynamic")  # static-pie too where the libc has it (aarch64)


def fixture_path(arch: str, name: str, flavour: str = "static") -> Path:
    path = OUT / arch / f"{name}-{flavour}"
    if not path.exists():
        pytest.fail(f"fixture {path} is not built: run ./setup.sh (make -C tests/fixtures)")
    return path


def qemuser(arch: str) -> str:
    return str(VENV_BIN / f"qemuser-{arch}")


def run_guest(
    arch: str,
    program: str | os.PathLike,
    *args: str,
    options: tuple[str, ...] = (),
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: str | os.PathLike | None = None,
) -> subprocess.CompletedProcess:
    """Run `program` under qemuser-<arch>; returns the completed process (bytes output)."""
    return subprocess.run(
        [qemuser(arch), *options, str(program), *args],
        input=input,
        capture_output=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )


def all_builds(name: str) -> list[tuple[str, str]]:
    """(arch, flavour) pairs a fixture is built in, for parametrising."""
    pairs = []
    for arch in ARCHES:
        for flavour in ("static", "dynamic", "static-pie"):
            if flavour == "static-pie" and arch != "aarch64":
                continue
            pairs.append((arch, flavour))
    return pairs
