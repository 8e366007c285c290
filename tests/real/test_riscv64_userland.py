"""The riscv64 twin of test_userland.py: Debian trixie's riscv64 userland (riscv64 is a release
architecture of trixie; tests/real/trixie.py fetches it) under qemuser-riscv64. bash pipelines
whose every stage is a foreign fork+exec of coreutils, busybox's shell tools, and python3.13 with
threads, subprocess, sqlite3, tempfile and sockets; each gives the output the same commands
give natively on the x86_64 host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_guest
from tests.real.test_userland import BASH_PIPELINES, BUSYBOX_TOOLS, SCRIPTS
from tests.real.trixie import FetchError, ensure_userland

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def trixie_root() -> Path:
    try:
        return ensure_userland()
    except (FetchError, OSError, subprocess.CalledProcessError) as err:
        pytest.fail(f"cannot fetch Debian trixie's riscv64 packages (run ./setup.sh): {err}")


def _environment(tmp: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp), "LC_ALL": "C", "HOME": "/"}


def test_bash_pipelines_of_foreign_coreutils(trixie_root: Path, tmp_path: Path) -> None:
    guest_tmp, host_tmp = tmp_path / "guest", tmp_path / "host"
    guest_tmp.mkdir()
    host_tmp.mkdir()
    host = subprocess.run(
        ["/bin/bash", "-c", BASH_PIPELINES], capture_output=True, env=_environment(host_tmp)
    )
    guest = run_guest(
        "riscv64",
        trixie_root / "usr" / "bin" / "bash",
        "-c",
        BASH_PIPELINES,
        options=("-L", str(trixie_root)),
        env={**os.environ, **_environment(guest_tmp)},
    )
    assert host.returncode == 4
    assert guest.stdout == host.stdout
    assert guest.stderr == host.stderr
    assert guest.returncode == 4


def test_python313_threads_subprocess_sqlite_tempfile_sockets(trixie_root: Path) -> None:
    script = SCRIPTS / "py_processes.py"
    host = subprocess.run([sys.executable, str(script)], capture_output=True)
    guest = run_guest(
        "riscv64",
        trixie_root / "usr" / "bin" / "python3.13",
        str(script),
        options=("-L", str(trixie_root)),
        env={**os.environ, "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    assert host.returncode == 0
    assert guest.stdout == host.stdout, guest.stderr[-2000:]
    assert guest.returncode == 0


def test_busybox_shell_tools(trixie_root: Path, tmp_path: Path) -> None:
    result = run_guest(
        "riscv64",
        trixie_root / "usr" / "bin" / "busybox",
        "sh",
        "-c",
        BUSYBOX_TOOLS,
        options=("-L", str(trixie_root)),
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.stdout == b"b 3\nheLLo\nout/d/e/f\nout/d/g\nx\ny\nd/e/f\nlast 0\n"
    assert result.returncode == 0
