"""The smallest end-to-end check: a C hello on every arch and link flavour."""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest


@pytest.mark.parametrize(("arch", "flavour"), all_builds("hello"))
def test_hello_prints_and_exits_zero(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "hello", flavour), "one", "two")
    assert result.stdout == b"Hello, world!\nargc=3 argv0-set=1\n"
    assert result.stderr == b""
    assert result.returncode == 0
