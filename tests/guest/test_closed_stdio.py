"""qemuser started with its standard fds closed, or with a log that cannot be written: the
guest's fds 0-2 are the guest's business (closed is EBADF to it, nothing more), qemuser's own
messages go nowhere when its stderr is closed, and a failing log never stops the guest."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ARCHES, NATIVE, fixture_path, qemuser
from tests.system.conftest import BIN, fixture


def run_closed(command: list[str], closed: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `command` with the shell redirections `closed` (e.g. "<&- >&-") applied: what the
    fds capture_output would give are closed before the program starts."""
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {closed}', "sh", *command],
        capture_output=True,
        timeout=120,
        **kwargs,
    )


def report_of(arch: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    report = tmp_path / f"{arch}.txt"
    program = str(fixture_path(arch, "std_closed", "static"))
    command = [program] if arch == NATIVE else [qemuser(arch), program]
    result = run_closed([*command, str(report), *args], "<&- >&- 2>&-")
    return result.returncode, report.read_text()


@pytest.mark.parametrize("arch", ARCHES)
def test_closed_stdio_is_ebadf_to_the_guest_and_its_first_opens_take_0_1_2(
    arch: str, tmp_path: Path
) -> None:
    native_status, native = report_of(NATIVE, tmp_path)
    assert (native_status, native.splitlines()[-3:]) == (
        0,
        ["report fd = 0", "next open = 1, dup = 2", "done"],
    )
    assert report_of(arch, tmp_path) == (0, native)


@pytest.mark.parametrize("arch", ARCHES)
def test_a_guest_dying_with_all_stdio_closed_dies_of_its_signal(arch: str, tmp_path: Path) -> None:
    native_status, native = report_of(NATIVE, tmp_path, "segv")
    assert native_status == -signal.SIGSEGV
    assert report_of(arch, tmp_path, "segv") == (-signal.SIGSEGV, native)


@pytest.mark.parametrize("closed", ["<&-", ">&-", "2>&-"])
def test_hello_with_one_stdio_fd_closed(closed: str) -> None:
    hello = str(fixture_path("aarch64", "hello", "dynamic"))
    result = run_closed([qemuser("aarch64"), hello], closed)
    assert result.returncode == 0
    if closed != ">&-":
        assert result.stdout == b"Hello, world!\nargc=1 argv0-set=1\n"
    assert result.stderr == b""


def test_usage_error_with_stdout_closed_is_one_line() -> None:
    result = run_closed([qemuser("riscv64"), "-cpu", "nonesuch", "/bin/true"], ">&-")
    assert result.returncode == 1
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize(
    "options", [("-strace",), ("-d", "in_asm,page"), ("-d", "in_asm,page", "-strace")]
)
def test_a_log_on_a_full_disk_never_stops_the_guest(arch: str, options: tuple[str, ...]) -> None:
    hello = str(fixture_path(arch, "hello", "static"))
    result = subprocess.run(
        [qemuser(arch), *options, "-D", "/dev/full", hello, "x"],
        capture_output=True,
        timeout=120,
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"Hello, world!\nargc=2 argv0-set=1\n"


def test_system_mode_with_stdout_closed() -> None:
    result = run_closed([str(BIN / "qemuser-system-aarch64"), "-version"], ">&-")
    assert (result.returncode, result.stderr) == (0, b"")
    elf = fixture("hello-aarch64.elf")
    command = [str(BIN / "qemuser-system-aarch64"), "-M", "virt", "-nographic", "-bios", "none"]
    result = run_closed([*command, "-kernel", str(elf)], ">&-", stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stderr) == (0, b"")


@pytest.mark.parametrize("arch", ARCHES)
def test_help_into_a_pipe_nobody_reads(arch: str) -> None:
    # `qemuser-ARCH -cpu help | head -1`, with the reader gone before the first write
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [qemuser(arch), "-cpu", "help"], stdout=write_end, stderr=subprocess.PIPE, timeout=60
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (0, b"")
