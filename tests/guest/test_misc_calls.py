"""capget/capset, splice/tee/vmsplice, pidfd_open/pidfd_send_signal/pidfd_getfd and
name_to_handle_at/open_by_handle_at (issue 11, defect 11; all ENOSYS before), done by the host
kernel and compared with the same source's native run (tests/fixtures/misc_calls.c)."""

import re

import pytest

from tests.conftest import all_builds, fixture_path, run_guest, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("misc_calls"))
def test_misc_calls_behave_as_on_linux(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "misc_calls", flavour, status=0, workdir=tmp_path, timeout=60)
    assert result.stderr == b""


# -strace lines (after "PID "), with 0xADDR for a guest address (and N for a file
# handle's size and type, which the file system chooses)
STRACE_LINES = [
    "capget({version=_LINUX_CAPABILITY_VERSION_3, pid=0},NULL) = 0",
    "capget(0x8,0xADDR) = -1 errno=14 (EFAULT: Bad address)",
    "splice(7,0xADDR,4,NULL,5,0) = 5",
    "splice(3,NULL,7,NULL,1,SPLICE_F_NONBLOCK) = -1 errno=11"
    " (EAGAIN: Resource temporarily unavailable)",
    "tee(3,6,100,0) = 5",
    "vmsplice(4,0xADDR,2,0) = 8",
    "pidfd_open(PID,0) = 3",
    "pidfd_send_signal(3,SIGUSR1,NULL,0) = 0",
    "pidfd_getfd(3,900,0) = -1 errno=9 (EBADF: Bad file descriptor)",
    'name_to_handle_at(AT_FDCWD,"file",{handle_bytes=N, handle_type=N},0xADDR,0) = 0',
    "open_by_handle_at(3,{handle_bytes=N, handle_type=N},O_RDONLY) = 5",
]


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_strace_decodes_them(arch: str, tmp_path) -> None:
    result = run_guest(arch, fixture_path(arch, "misc_calls"), options=("-strace",), cwd=tmp_path)
    assert result.returncode == 0
    log = result.stderr.decode()
    assert "unsupported syscall" not in log
    shown = set()
    for line in log.splitlines():
        pid, _, call = line.partition(" ")
        call = call.replace(f"({pid},", "(PID,")
        call = re.sub(r"handle_bytes=\d+, handle_type=\d+", "handle_bytes=N, handle_type=N", call)
        shown.add(re.sub(r"0x[0-9a-f]{3,}", "0xADDR", call))
    for expected in STRACE_LINES:
        assert expected in shown, expected
