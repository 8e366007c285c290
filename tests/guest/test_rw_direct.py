"""read/write and friends on every kind of guest buffer (tests/fixtures/rw_direct.c).

qemuser passes guest buffers to the host kernel as pointers into guest memory; the fixture
checks the cases where that could differ from Linux: buffers across separately made mappings
and heap steps, read-only / PROT_NONE / write-only pages, code rewritten by read() (in place
and across a W^X flip), iovecs, positioned I/O, mremap and fork.

The expected text is what the same source prints when compiled natively and run on Linux.
"""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest

LINUX_OUTPUT = (
    "read across two mappings: 16, intact\n"
    "write across two mappings: 8, 456789ab\n"
    "read into read-only: EFAULT, into PROT_NONE: EFAULT, ending in PROT_NONE: EFAULT, "
    "input kept: 4 data, page kept: r\n"
    "write from PROT_NONE: EFAULT\n"
    "write from write-only: 1 w, read into it: 1 W\n"
    "code read() in place: 11 then 22, after W^X flip: 33\n"
    "readv: 15 abcd|EFGHIJKL|xyz\n"
    "writev: 9 xyz--abcd\n"
    "readv, second buffer read-only: EFAULT, input kept: 8 12345678\n"
    "readv, first buffer read-only: EFAULT\n"
    "writev from unmapped: EFAULT\n"
    "pwrite/pread at 100: 5 5 HELLO, hole reads 0\n"
    "preadv at 100: 5 HEL|LO, at -1: EINVAL\n"
    "pwritev at 0: 4 abcd, pread into unmapped: EFAULT\n"
    "mremap: first byte m, read into the grown part: 12 after mremap\n"
    "after fork: child's read() into shared memory child, into private memory p\n"
    "read across a heap step: 8 HEAPHEAP\n"
)


@pytest.mark.parametrize(("arch", "flavour"), all_builds("rw_direct"))
def test_buffers_behave_as_on_linux(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "rw_direct", flavour))
    assert result.stdout.decode() == LINUX_OUTPUT
    assert result.stderr == b""
    assert result.returncode == 0
