"""setrlimit's refusals (tests/fixtures/rlimit_errors.c; LTP's setrlimit02/03): soft above
hard is EINVAL, RLIMIT_NOFILE above fs.nr_open and a hard limit raised without privilege are
EPERM. qemuser went through Python's resource module, which turns the host's EPERM into a
ValueError: the guest got ENOSYS and an "internal error" line. PR_SET_SECUREBITS without
CAP_SETPCAP is EPERM (prctl02); qemuser answered EINVAL for both securebits options."""

from __future__ import annotations

import os

import pytest

from tests.conftest import all_builds, run_like_native

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the child gives up root")


@pytest.mark.parametrize(("arch", "flavour"), all_builds("rlimit_errors"))
def test_rlimit_errors_as_on_linux(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "rlimit_errors", flavour, status=0, workdir=tmp_path, timeout=60)
    assert result.stderr == b""
    assert result.stdout == (
        b"soft above hard: -1 EINVAL\n"
        b"nofile above nr_open: -1 EPERM\n"
        b"child: lower: 0\n"
        b"child: setuid: 0\n"
        b"child: raise the hard limit: -1 EPERM\n"
        b"child: now 100 100\n"
        b"child: PR_GET_SECUREBITS: 0\n"
        b"child: PR_SET_SECUREBITS: -1 EPERM\n"
    )
