"""mmap and friends with Linux's semantics (tests/fixtures/mm_basic.c).

The expected text is what the same source prints when compiled natively and run on Linux.
"""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest

LINUX_OUTPUT = (
    "anon 5000: aligned yes, zero yes, pages rw rw\n"
    "next mapping below the previous (top-down): yes\n"
    "hint free: taken, unaligned hint: rounded down, hint busy: ignored\n"
    "write-only page: rw, reads back w\n"
    "length 0: EINVAL\n"
    "no map type: EINVAL\n"
    "huge length: ENOMEM\n"
    "fixed unaligned: EINVAL\n"
    "bad fd: EBADF\n"
    "fixed past user space: ENOMEM\n"
    "MAP_FIXED: at address yes, new page zero yes, neighbours kept yes, pages rw r- rw\n"
    "MAP_FIXED_NOREPLACE on a mapping: EEXIST, contents kept yes\n"
    "MAP_FIXED_NOREPLACE overlapping the end: EEXIST\n"
    "MAP_FIXED_NOREPLACE on free space: ok at address yes\n"
    "munmap unaligned: EINVAL, length 0: EINVAL\n"
    "munmap middle 5000 bytes: ok, pages rw -- -- rw, data kept yes\n"
    "munmap of a hole: ok\n"
    "mprotect 1 byte read-only: ok, pages rw r- rw\n"
    "mprotect none: ok, pages rw r- --\n"
    "mprotect back: ok, pages rw rw rw, data kept yes\n"
    "mprotect unaligned: EINVAL, unknown bit: EINVAL\n"
    "mprotect over a hole: ENOMEM, pages r- r- --\n"
    "64 GiB reservation: ok, commit: ok, pages -- -- --, data kept through PROT_NONE: yes\n"
    "munmap reservation: ok\n"
    "generated code returned 7 then 9, page r-\n"
    "code rewritten in place returned 7 then 9\n"
    "mremap grow in place: ok, same address yes, pages rw rw\n"
    "mremap grow blocked, no MAYMOVE: ENOMEM\n"
    "mremap MAYMOVE: ok, moved yes, data kept yes, old gone yes, new pages rw rw rw\n"
    "mremap shrink: ok, same address yes, pages rw --\n"
    "mremap FIXED: ok at target yes, data kept yes, target's other page r-\n"
    "mremap FIXED without MAYMOVE: EINVAL\n"
    "mremap unaligned: EINVAL, unmapped: EFAULT, new size 0: EINVAL\n"
    "mremap old size 0 of a private mapping: EINVAL\n"
    "mremap shared grow: ok, moved yes, data kept yes, first page rw\n"
    "madvise WILLNEED: ok, data kept yes\n"
    "madvise DONTNEED: ok, anonymous page reads zero yes, other page kept yes\n"
    "madvise unaligned: EINVAL, bad advice: EINVAL\n"
    "madvise over a hole: ENOMEM\n"
    "private file map: ok, contents match, past EOF in last page zero yes\n"
    "private write stays private: mapping x, file A\n"
    "private page after DONTNEED back to the file's: A\n"
    "offset mapping: ok, first byte O (file offset 4096 holds O)\n"
    "unaligned offset: EINVAL\n"
    "shared map: ok, store reaches read(): #, other mapping sees #\n"
    "pwrite reaches the shared mapping: !\n"
    'msync MS_SYNC: ok, file holds "synced"\n'
    "msync unaligned: EINVAL, SYNC|ASYNC: EINVAL, unmapped: ENOMEM\n"
    "madvise DONTNEED on shared keeps data: ok, #\n"
    "shared writable of O_RDONLY fd: EACCES, private writable: ok\n"
    "read-only shared map of O_RDONLY fd: ok, starts ELF, mprotect writable: EACCES, page r-\n"
    "map of O_WRONLY fd: EACCES\n"
    "after fork: shared anon 41, private anon 1, shared file @\n"
)

SEGFAULT_MESSAGE = b"qemuser: uncaught target signal 11 (Segmentation fault) - core dumped\n"


@pytest.mark.parametrize(("arch", "flavour"), all_builds("mm_basic"))
def test_memory_calls_behave_as_on_linux(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "mm_basic", flavour))
    assert result.stdout.decode() == LINUX_OUTPUT
    assert result.stderr == b""
    assert result.returncode == 0


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
@pytest.mark.parametrize(
    ("how", "printed"),
    [
        ("write-ro", b"read of read-only page: 0\n"),  # the read works, the store kills
        ("read-none", b""),
        ("exec-data", b""),
    ],
)
def test_forbidden_access_dies_of_sigsegv(arch: str, how: str, printed: bytes) -> None:
    result = run_guest(arch, fixture_path(arch, "mm_basic", "dynamic"), how)
    assert result.stdout == printed
    assert result.stderr == SEGFAULT_MESSAGE
    assert result.returncode == -11  # the shell shows 139
