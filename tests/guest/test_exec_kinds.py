"""execve of every kind of program: another architecture's ELF, a native program, scripts with
a native or a foreign interpreter; with no binfmt handler involved.

What a host program or script prints, and how an exec fails, must be as when the same source
(exec_it) runs built for the host. The foreign targets cannot run natively (not without a binfmt
handler, which would make the reference depend on the machine), so their lines are written
here."""

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import fixture_path, run_guest, run_like_native

OTHER = {"aarch64": "riscv64", "riscv64": "aarch64"}


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_exec_of_the_other_architecture(arch: str) -> None:
    target = fixture_path(OTHER[arch], "hello", "dynamic")
    result = run_guest(arch, fixture_path(arch, "exec_it", "static"), str(target), "x", "y")
    assert result.stdout == b"Hello, world!\nargc=3 argv0-set=1\n"
    assert result.returncode == 0


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_exec_of_a_native_program(arch: str) -> None:
    result = run_like_native(arch, "exec_it", "dynamic", "/bin/echo", "native", "ok", status=0)
    assert result.stdout == b"native ok\n"


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_exec_of_a_script_with_a_native_interpreter(arch: str, tmp_path: Path) -> None:
    script = _script(tmp_path / "s.sh", '#!/bin/sh\necho from sh: "$@"\nexit 5\n')
    result = run_like_native(arch, "exec_it", "static", str(script), "a", "b", status=5)
    assert result.stdout == b"from sh: a b\n"


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_exec_of_a_script_with_a_foreign_interpreter(arch: str, tmp_path: Path) -> None:
    interpreter = fixture_path(arch, "hello", "static")
    script = _script(tmp_path / "s", f"#!{interpreter} opt\nignored\n")
    result = run_guest(arch, fixture_path(arch, "exec_it", "static"), str(script), "a")
    # the interpreter's argv: interpreter, "opt", script, "a"
    assert result.stdout == b"Hello, world!\nargc=4 argv0-set=1\n"
    assert result.returncode == 0


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_exec_errors(arch: str, tmp_path: Path) -> None:
    not_executable = tmp_path / "plain"
    not_executable.write_text("data")
    result = run_like_native(arch, "exec_it", "static", str(not_executable), status=127)
    assert result.stdout == f"execv {not_executable}: Permission denied\n".encode()
    garbage = _script(tmp_path / "garbage", "")
    os.truncate(garbage, 0)
    garbage.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9)
    result = run_like_native(arch, "exec_it", "static", str(garbage), status=127)
    assert result.stdout == f"execv {garbage}: Exec format error\n".encode()
