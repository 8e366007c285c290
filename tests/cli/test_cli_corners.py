"""Command-line corner cases where qemuser disagreed with qemu-user (issue 11, defect 12)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import fixture_path, run_guest

SHOW_ODD_ENV = r"""
#include <stdio.h>
extern char **environ;
int main(void)
{
    for (char **e = environ; *e; e++)
        if ((*e)[0] == '=' || (*e)[0] == 'Q')
            printf("[%s]\n", *e);
    return 0;
}
"""


def test_an_empty_variable_name_reaches_the_guest(tmp_path: Path) -> None:
    # qemu-user 7.2 runs it and the guest's environ holds "=x" (measured); it was refused
    source = tmp_path / "env.c"
    source.write_text(SHOW_ODD_ENV)
    program = tmp_path / "env"
    subprocess.run(
        ["aarch64-linux-gnu-gcc", "-static", "-o", str(program), str(source)], check=True
    )
    result = run_guest("aarch64", program, options=("-E", "=x", "-E", "QY="), env={})
    assert (result.stdout, result.stderr, result.returncode) == (b"[=x]\n[QY=]\n", b"", 0)


def test_stack_size_takes_a_t_suffix() -> None:
    # "invalid stack size '1T'" before; a tebibyte is more than the largest stack we map
    probe = fixture_path("aarch64", "cli_probe", "static")
    result = run_guest("aarch64", probe, options=("-s", "1T"))
    assert result.stderr == b"qemuser-aarch64: stack size '1T' is too large (at most 4G)\n"
    assert result.returncode == 1


def test_a_file_name_with_a_newline_gives_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "two\nlines"
    result = run_guest("aarch64", missing)
    shown = str(missing).replace("\n", "\\n")
    assert result.stderr.decode() == (
        f"qemuser-aarch64: Could not open '{shown}': No such file or directory\n"
    )
    assert result.returncode == 1
