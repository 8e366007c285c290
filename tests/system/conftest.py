"""Shared helpers for system-mode tests: the built bare-metal fixtures and a runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "system"
OUT = FIXTURES / "out"
BIN = Path(sys.executable).parent


def fixture(name: str) -> Path:
    path = OUT / name
    if not path.exists():
        subprocess.run(["make", "-s", "-C", str(FIXTURES)], check=False)
    if not path.exists():
        pytest.skip(f"{name} not built (make -C tests/fixtures/system)")
    return path


def run_system(arch: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run qemuser-system-ARCH; the timeout makes a hung guest fail instead of hanging CI."""
    return subprocess.run(
        [str(BIN / f"qemuser-system-{arch}"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
