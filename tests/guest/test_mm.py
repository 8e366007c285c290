"""mmap and friends with Linux's semantics (tests/fixtures/mm_basic.c).

Each run must print what the same source prints built for the host (the fixture carries x86-64
code for its generated-code lines) and end the same way.
"""

import pytest

from tests.conftest import all_builds, run_like_native

SEGFAULT_MESSAGE = b"qemuser: uncaught target signal 11 (Segmentation fault) - core dumped\n"


@pytest.mark.parametrize(("arch", "flavour"), all_builds("mm_basic"))
def test_memory_calls_behave_as_on_linux(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "mm_basic", flavour, status=0)
    assert result.stderr == b""


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
@pytest.mark.parametrize("how", ["write-ro", "read-none", "exec-data"])
def test_forbidden_access_dies_of_sigsegv(arch: str, how: str) -> None:
    # write-ro prints that the read worked, then the store kills
    result = run_like_native(arch, "mm_basic", "dynamic", how, status=-11)  # a shell shows 139
    assert result.stderr == SEGFAULT_MESSAGE
