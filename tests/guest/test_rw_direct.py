"""read/write and friends on every kind of guest buffer (tests/fixtures/rw_direct.c).

qemuser passes guest buffers to the host kernel as pointers into guest memory; the fixture
checks the cases where that could differ from Linux: buffers across separately made mappings
and heap steps, read-only / PROT_NONE / write-only pages, code rewritten by read() (in place
and across a W^X flip), iovecs, positioned I/O, mremap and fork.

Each run must print what the same source prints built for the host (it has x86-64 code for the
code-rewriting lines) and exit as it does.
"""

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("rw_direct"))
def test_buffers_behave_as_on_linux(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "rw_direct", flavour, status=0)
    assert result.stderr == b""
