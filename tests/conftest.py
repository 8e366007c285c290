"""Shared helpers: where fixtures are built, and how to run a guest under qemuser."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "out"
VENV_BIN = Path(sys.executable).parent
ARCHES = ("aarch64", "riscv64")
FLAVOURS = ("static", "dynamic")  # static-pie too where the libc has it (aarch64)


# The unit tests that need the CPU, each with why; every other module in tests/unit must import
# without unicorn (tests/unit/test_cpu_free.py checks both ways). Their tests carry the `cpu`
# marker, so `-m "not cpu"` runs the pure ones.
CPU_UNIT_TESTS = {
    "test_cpu_specs": "builds an engine for every CPU model",
    "test_elf": "loads programs into an address space on an engine, and runs their code",
    "test_elf_linux": "loads programs into an address space on an engine",
    "test_exit_checks": "patches and runs unicorn's own engines",
    # its packet tests alone would need no CPU: they could live in a file of their own
    "test_gdb_protocol": "builds target descriptions from the CPU specs (unicorn's registers)",
    "test_memory": "the address space lives in an engine's memory",
    "test_stack": "writes the initial stack into an address space on an engine",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cpu: needs the CPU (unicorn) although under tests/unit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        if path.parent.name == "unit" and path.stem in CPU_UNIT_TESTS:
            item.add_marker(pytest.mark.cpu)


def fixture_path(arch: str, name: str, flavour: str = "static") -> Path:
    path = OUT / arch / f"{name}-{flavour}"
    if not path.exists():
        pytest.fail(f"fixture {path} is not built: run ./setup.sh (make -C tests/fixtures)")
    return path


def qemuser(arch: str) -> str:
    return str(VENV_BIN / f"qemuser-{arch}")


def run_guest(
    arch: str,
    program: str | os.PathLike,
    *args: str,
    options: tuple[str, ...] = (),
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: str | os.PathLike | None = None,
) -> subprocess.CompletedProcess:
    """Run `program` under qemuser-<arch>; returns the completed process (bytes output)."""
    return subprocess.run(
        [qemuser(arch), *options, str(program), *args],
        input=input,
        capture_output=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )


NATIVE = "native"  # out/native/: the fixtures built by the host's gcc


def command_for(arch: str, program: str | os.PathLike, *args: str) -> list[str]:
    """The command line running `program` under qemuser-<arch>, or natively when `arch` is
    NATIVE (as run_native runs it), for tests that drive a running process."""
    if arch == NATIVE:
        return ["setarch", "-R", str(program), *args]
    return [qemuser(arch), str(program), *args]


def run_native(
    program: str | os.PathLike,
    *args: str,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: str | os.PathLike | None = None,
) -> subprocess.CompletedProcess:
    """Run a host program as Linux would run the guest: with address-space randomisation off
    (setarch -R, util-linux), since qemuser lays a guest out without it (brk right after the
    program, as elf_layout checks)."""
    return subprocess.run(
        command_for(NATIVE, program, *args),
        input=input,
        capture_output=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )


def _stdout_mismatch(guest: bytes, native: bytes) -> str:
    diff = difflib.unified_diff(
        native.decode(errors="replace").splitlines(keepends=True),
        guest.decode(errors="replace").splitlines(keepends=True),
        "native",
        "guest",
    )
    return "the guest's stdout differs from the native run's:\n" + "".join(diff)


def run_like_native(
    arch: str,
    name: str,
    flavour: str,
    *args: str,
    status: int,
    env: dict[str, str] | None = None,
    workdir: Path | None = None,
    timeout: float = 120,
    differences: tuple[tuple[bytes, bytes], ...] = (),
) -> subprocess.CompletedProcess:
    """Run fixture `name` (build `flavour`) under qemuser-<arch> and natively, with the same
    arguments and environment, and check that the guest behaves as Linux: its stdout
    is the native run's byte for byte, and so is its exit status. `status` is the status the
    native run must have, so that a broken reference (a crash, a missing build) fails rather
    than passes. With `workdir`, each side runs in its own new empty folder under it
    (`guest/`, `native/`), as fixtures that create files want. `differences`: lines where
    the guest must differ from the native run (the architecture's name, a known difference
    from Linux), each a (native line, guest line) pair; the native line must be there, and
    the guest must print the other in its place. Returns the guest's run: its
    stderr holds qemuser's own messages, which the caller checks."""
    guest_dir = native_dir = None
    if workdir is not None:
        guest_dir, native_dir = workdir / "guest", workdir / NATIVE
        guest_dir.mkdir()
        native_dir.mkdir()
    native = run_native(
        fixture_path(NATIVE, name, flavour),
        *args,
        env=env,
        timeout=timeout,
        cwd=native_dir,
    )
    assert native.returncode == status, (
        f"the native {name}-{flavour} exited with {native.returncode}, not {status}: "
        f"{native.stderr.decode(errors='replace')}"
    )
    guest = run_guest(
        arch,
        fixture_path(arch, name, flavour),
        *args,
        env=env,
        timeout=timeout,
        cwd=guest_dir,
    )
    expected = native.stdout
    for native_line, guest_line in differences:
        assert native_line in expected.splitlines(keepends=True), (
            f"the native run does not print {native_line!r}: revisit the difference"
        )
        expected = expected.replace(native_line, guest_line)
    assert guest.stdout == expected, _stdout_mismatch(guest.stdout, expected)
    assert guest.returncode == native.returncode, (
        f"the guest exited with {guest.returncode}, natively {native.returncode}; "
        f"guest stderr: {guest.stderr.decode(errors='replace')}"
    )
    return guest


def all_builds(name: str) -> list[tuple[str, str]]:
    """(arch, flavour) pairs a fixture is built in, for parametrising."""
    pairs = []
    for arch in ARCHES:
        for flavour in ("static", "dynamic", "static-pie"):
            if flavour == "static-pie" and arch != "aarch64":
                continue
            pairs.append((arch, flavour))
    return pairs
