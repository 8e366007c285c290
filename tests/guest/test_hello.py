"""The smallest end-to-end check: a C hello on every arch and link flavour, printing what the
same source prints built for the host."""

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("hello"))
def test_hello_prints_and_exits_zero(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "hello", flavour, "one", "two", status=0)
    assert result.stdout.startswith(b"Hello, world!\n")
    assert result.stderr == b""


def test_the_native_comparison_can_fail() -> None:
    # a guest line other than the native one, and a native status other than the one expected
    with pytest.raises(AssertionError, match="the guest's stdout differs from the native run's"):
        run_like_native(
            "riscv64", "hello", "static", status=0, differences=((b"Hello, world!\n", b"Hi\n"),)
        )
    with pytest.raises(AssertionError, match="the native hello-static exited with 0, not 1"):
        run_like_native("riscv64", "hello", "static", status=1)
