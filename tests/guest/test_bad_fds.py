"""File descriptors a program never opened (issue 11, defect 5): every fd-taking call, given a
negative fd, a closed one, one far out of range or one the emulator holds for itself, answers
as Linux does, EBADF for most (tests/fixtures/bad_fds.c, compared with its native run).
Before the fix: fcntl, ioctl, dup, fsync, fdatasync, fchdir and flock on -1 or -100 logged
"internal error … ValueError" and gave ENOSYS, fstat(-100) succeeded, signalfd4 and sendmmsg
gave EINVAL, readv/writev with a bad second iovec gave EFAULT instead of the first one's bytes,
and the emulator's own fds (a signalfd's write end, the -D log) answered as open files."""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest, run_like_native, run_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("bad_fds"))
def test_bad_fds_are_refused_as_on_linux(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "bad_fds", flavour, status=0, workdir=tmp_path)
    assert result.stderr == b""  # no "internal error" line


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_the_log_fd_is_no_fd_of_the_guest(arch: str, tmp_path) -> None:
    # -D: the emulator's log is open on a host fd of its own while the guest runs
    (tmp_path / "native").mkdir()
    (tmp_path / "guest").mkdir()
    native = run_native(fixture_path("native", "bad_fds"), cwd=tmp_path / "native")
    log = tmp_path / "strace.log"
    guest = run_guest(
        arch,
        fixture_path(arch, "bad_fds"),
        options=("-strace", "-D", str(log)),
        cwd=tmp_path / "guest",
    )
    assert native.returncode == 0
    assert guest.stdout == native.stdout
    assert guest.returncode == 0
    text = log.read_text()
    assert "internal error" not in text
    assert " fstat(-100," in text  # the log is the strace of this very run
