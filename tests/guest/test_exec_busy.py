"""execve of a program that some process has open for writing is ETXTBSY
(tests/fixtures/exec_busy.c; LTP's execve04), and runs once the writer has closed it. qemuser
reads the program instead of executing it, so the host never refused: a read lease (refused
exactly when the file has writers) now asks it."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("exec_busy"))
def test_a_program_open_for_writing_does_not_run(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "exec_busy", flavour, status=0, workdir=tmp_path, timeout=60)
    assert result.stdout == (
        b"open for writing: execv: ETXTBSY\n"
        b"open for writing: child status 1\n"
        b"the copy ran\n"
        b"closed: child status 0\n"
    )
