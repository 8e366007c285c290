"""Programs Linux's binfmt_elf runs run; those it refuses are refused with its errno, from the
command line and from a guest's execve (tests/fixtures/exec_it.c prints execv's strerror).

Checked on this x86_64 host with the same shapes built for x86_64 (Linux 6.x) and under
qemu-user 7.2; where the two differ, Linux is followed (said at the case).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ARCHES, fixture_path, run_guest
from tests.tiny_elf import NOSTDLIB_BSS_SOURCE, PAGE, PF_R, PF_W, PT_LOAD, Segment, program

SEGV = "qemuser: uncaught target signal 11 (Segmentation fault) - core dumped\n"


def write_program(folder: Path, name: str, data: bytes, mode: int = 0o755) -> str:
    path = folder / name
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


def exec_it(arch: str, target: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_guest(arch, fixture_path(arch, "exec_it", "static"), target, timeout=timeout)


def refused(arch: str, result: subprocess.CompletedProcess, message: str) -> None:
    assert result.stdout == b""
    assert result.stderr.decode() == f"qemuser-{arch}: {message}\n"
    assert result.returncode == 1


# ---- accepted by Linux (refused before) ----------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
def test_nostdlib_program_with_a_bss_only_segment_runs(arch: str, tmp_path: Path) -> None:
    source = tmp_path / "bss.c"
    source.write_text(NOSTDLIB_BSS_SOURCE[arch])
    binary = tmp_path / "bss"
    subprocess.run(
        [f"{arch}-linux-gnu-gcc", "-static", "-nostdlib", "-O2", "-o", str(binary), str(source)],
        check=True,
    )
    result = run_guest(arch, binary)
    assert (result.stdout, result.stderr, result.returncode) == (b"", b"", 42)
    result = exec_it(arch, str(binary))  # and through a guest's execve
    assert (result.stdout, result.stderr, result.returncode) == (b"", b"", 42)


@pytest.mark.parametrize("arch", ARCHES)
def test_segment_running_past_the_end_of_the_file_runs(arch: str, tmp_path: Path) -> None:
    path = write_program(tmp_path, "long-text", program(arch, text_size=3 * PAGE))
    assert run_guest(arch, path).returncode == 42
    assert exec_it(arch, path).returncode == 42


# ---- refused before the point of no return: execve returns the errno ---------------------


def test_program_without_execute_permission(tmp_path: Path) -> None:
    path = write_program(tmp_path, "plain", program("aarch64"), mode=0o644)
    refused("aarch64", run_guest("aarch64", path), f"'{path}': Permission denied (not executable)")
    result = exec_it("aarch64", path)
    assert (result.stdout.decode(), result.returncode) == (
        f"execv {path}: Permission denied\n",
        127,
    )


def test_fifo_as_the_program_is_refused_at_once(tmp_path: Path) -> None:
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo, 0o755)
    result = run_guest("aarch64", fifo, timeout=20)
    refused("aarch64", result, f"'{fifo}': Permission denied (not a regular file)")


@pytest.mark.parametrize("arch", ARCHES)
def test_fifo_as_the_interpreter_is_refused_at_once(arch: str, tmp_path: Path) -> None:
    fifo = str(tmp_path / "ld.so")
    os.mkfifo(fifo, 0o755)
    path = write_program(tmp_path, "dyn", program(arch, interps=(fifo.encode() + b"\0",)))
    result = run_guest(arch, path, timeout=20)
    refused(
        arch,
        result,
        f"cannot load interpreter {fifo} of '{path}': "
        f"'{fifo}': Permission denied (not a regular file)",
    )
    result = exec_it(arch, path, timeout=20)
    assert (result.stdout.decode(), result.returncode) == (
        f"execv {path}: Permission denied\n",
        127,
    )


def test_pt_interp_without_its_nul(tmp_path: Path) -> None:
    # qemu-user: "Invalid PT_INTERP entry"
    path = write_program(tmp_path, "nonul", program("riscv64", interps=(b"/lib/ld.so",)))
    refused(
        "riscv64",
        run_guest("riscv64", path),
        f"'{path}': Exec format error (PT_INTERP is not NUL-terminated)",
    )
    result = exec_it("riscv64", path)
    assert (result.stdout.decode(), result.returncode) == (
        f"execv {path}: Exec format error\n",
        127,
    )


def test_the_first_of_two_pt_interp_counts(tmp_path: Path) -> None:
    # qemu-user refuses both orders ("Multiple PT_INTERP entries"); Linux opens the first
    missing = str(tmp_path / "no-such-ld.so")
    real = b"/lib/ld-linux-aarch64.so.1\0"
    path = write_program(
        tmp_path, "two", program("aarch64", interps=(missing.encode() + b"\0", real))
    )
    refused(
        "aarch64",
        run_guest("aarch64", path),
        f"cannot load interpreter {missing} of '{path}': "
        f"Could not open '{missing}': No such file or directory",
    )
    result = exec_it("aarch64", path)
    assert result.stdout.decode() == f"execv {path}: No such file or directory\n"


# ---- refused while the segments are mapped: fatal for an execve caller -------------------


def test_file_size_above_memory_size(tmp_path: Path) -> None:
    # qemu-user runs it; Linux refuses it after the point of no return
    size = len(program("aarch64"))
    path = write_program(tmp_path, "big-file", program("aarch64", text_size=size, text_memsz=16))
    refused(
        "aarch64",
        run_guest("aarch64", path),
        f"'{path}': Invalid argument (a segment's file size exceeds its memory size)",
    )
    result = exec_it("aarch64", path)
    assert (result.stdout, result.stderr.decode(), result.returncode) == (b"", SEGV, -11)


def test_segment_beyond_riscv64_user_space_is_enomem_at_once(tmp_path: Path) -> None:
    # a 1 TiB bss, past Sv39's 256 GiB: took 17-24 s, then the stack was mapped over it
    bss = Segment(PT_LOAD, PF_R | PF_W, 0, 0x60_0000, 0, 1 << 40)
    path = write_program(tmp_path, "huge", program("riscv64", (bss,)))
    started = time.monotonic()
    result = run_guest("riscv64", path, timeout=60)
    assert time.monotonic() - started < 10
    refused(
        "riscv64",
        result,
        f"'{path}': Cannot allocate memory (a segment ends past the 256 GiB user address space)",
    )
    result = exec_it("riscv64", path)
    assert (result.stdout, result.stderr.decode(), result.returncode) == (b"", SEGV, -11)


def host_commit_limit() -> int | None:
    """RAM + swap when the host's overcommit heuristic applies, else None."""
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        return None
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return sum(int(fields[key].split()[0]) << 10 for key in ("MemTotal", "SwapTotal"))


def test_bss_larger_than_the_host_grants_is_enomem_at_once(tmp_path: Path) -> None:
    # inside aarch64's 48-bit user space, but Linux on this host would refuse the bss
    limit = host_commit_limit()
    if limit is None:
        pytest.skip("vm.overcommit_memory=1: the host grants any size")
    memsz = ((limit >> 30) + 1) << 31  # above RAM + swap, in whole GiB
    bss = Segment(PT_LOAD, PF_R | PF_W, 0, 0x1000_0000, 0, memsz)
    path = write_program(tmp_path, "huge", program("aarch64", (bss,)))
    started = time.monotonic()
    result = run_guest("aarch64", path, timeout=60)
    assert time.monotonic() - started < 10
    refused(
        "aarch64",
        result,
        f"'{path}': Cannot allocate memory (a writable segment of {memsz >> 30} GiB exceeds "
        "the host's memory + swap)",
    )
