"""get_robust_list of another process (tests/fixtures/robust_list.c; LTP's
get_robust_list01): ESRCH for no such process, EPERM for one the caller may not trace, as the
host checks them. qemuser answered every pid with the caller's own list."""

from __future__ import annotations

import os

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("robust_list"))
def test_another_process_is_checked(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "robust_list", flavour, status=0, timeout=60)
    last = b"init, not as root: EPERM\n" if os.getuid() == 0 else b"init, not as root: skipped\n"
    assert result.stdout == b"own: ok, length 1\nno such process: ESRCH\n" + last
