"""Command-line corner cases where qemuser disagreed with qemu-user (issue 11, defect 12)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
@pytest.mark.parametrize("how", ["option", "environment"])
def test_stack_size_takes_a_t_suffix(arch: str, how: str) -> None:
    # refused before ("too large (at most 4G)"); qemu-user takes it. The guest's RLIMIT_STACK
    # is the tebibyte (as `ulimit -s 1073741824` gives natively), the stack itself works, and
    # a dynamic program's loader still finds room (mmap space starts below the stack).
    program = fixture_path(arch, "stack_limit", "dynamic")
    if how == "option":
        result = run_guest(arch, program, options=("-s", "1T"))
    else:
        result = run_guest(arch, program, env={"QEMU_STACK_SIZE": "1T"})
    assert result.stdout == b"stack soft limit: 1073741824 KiB\nstack usable: 1792\n"
    assert (result.stderr, result.returncode) == (b"", 0)


def test_a_file_name_with_a_newline_gives_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "two\nlines"
    result = run_guest("aarch64", missing)
    shown = str(missing).replace("\n", "\\n")
    assert result.stderr.decode() == (
        f"qemuser-aarch64: Could not open '{shown}': No such file or directory\n"
    )
    assert result.returncode == 1
