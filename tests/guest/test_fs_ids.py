"""setfsuid/setfsgid (tests/fixtures/fs_ids.c; LTP's setfsuid01-04, setfsgid01-02): the host's
calls, which answer the previous id (-1 only asks) and make the new ids own the files created
from then on. qemuser used to answer the effective id and change nothing."""

from __future__ import annotations

import os

import pytest

from tests.conftest import all_builds, run_like_native

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changing the fs ids needs root")


@pytest.mark.parametrize(("arch", "flavour"), all_builds("fs_ids"))
def test_fs_ids_as_on_linux(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "fs_ids", flavour, status=0, workdir=tmp_path, timeout=60)
    assert b"setfsuid(-1): 1234\nsetfsgid(-1): 4321\n" in result.stdout
    assert b"open: ok, new file owned by 1234:4321\n" in result.stdout
