"""Files, directories and I/O (issue 2, item 6) and the sysroot rule (item 7).

fs_ops and fs_errors must print what the same sources print built for the host and run in an
empty directory: the file system behaves the same for every architecture, and the fixtures print
only values that do not depend on the machine. The sysroot cases are qemuser's own (-L), so
their lines are written here.
"""

import os
from pathlib import Path

import pytest

from tests.conftest import all_builds, fixture_path, run_guest, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("fs_ops"))
def test_file_system_calls_behave_as_on_linux(arch: str, flavour: str, tmp_path: Path) -> None:
    result = run_like_native(arch, "fs_ops", flavour, status=0, workdir=tmp_path)
    assert result.stderr == b""


@pytest.mark.parametrize(("arch", "flavour"), all_builds("fs_errors"))
def test_file_system_errors_are_linux_errno(arch: str, flavour: str, tmp_path: Path) -> None:
    result = run_like_native(arch, "fs_errors", flavour, status=0, workdir=tmp_path)
    assert result.stderr == b""


PROBE_DIR = "/qemuser-sysroot-probe"  # absent from the host: only the sysroot has it


@pytest.mark.parametrize(
    ("arch", "flavour", "given_by"),
    [("aarch64", "dynamic", "-L"), ("riscv64", "static", "QEMU_LD_PREFIX")],
)
def test_absolute_paths_resolve_inside_the_sysroot_first(
    arch: str, flavour: str, given_by: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / PROBE_DIR.lstrip("/")).mkdir(parents=True)
    (root / PROBE_DIR.lstrip("/") / "file").write_text("inside the sysroot")
    (root / PROBE_DIR.lstrip("/") / "link").symlink_to("lib-target")
    program = fixture_path(arch, "fs_ops", flavour)
    (root / PROBE_DIR.lstrip("/") / "prog").write_bytes(program.read_bytes())
    (root / PROBE_DIR.lstrip("/") / "prog").chmod(0o755)
    # a dynamic guest still needs its loader and libc from the sysroot
    (root / "lib").symlink_to(f"/usr/{arch}-linux-gnu/lib")
    work = tmp_path / "work"
    work.mkdir()
    assert not Path(PROBE_DIR).exists()
    by_option = given_by == "-L"
    result = run_guest(
        arch,
        program,
        "sysroot",
        f"{PROBE_DIR}/file",
        f"{PROBE_DIR}/link",
        f"{PROBE_DIR}/prog",
        options=("-L", str(root)) if by_option else (),
        env=None if by_option else {**os.environ, "QEMU_LD_PREFIX": str(root)},
        cwd=work,
    )
    assert result.stderr == b""
    assert result.stdout == (
        b'open in the sysroot: "inside the sysroot"\n'
        b"stat in the sysroot: 0\n"
        b"  size: 18\n"
        b"access in the sysroot: 0\n"
        b"readlink in the sysroot: 10\n"
        b'  target "lib-target"\n'
        b"lstat in the sysroot is a link: 1\n"
        b'absolute path missing from the sysroot: "host file"\n'
        b"exec'd program runs\n"
        b"exec from the sysroot: exit status: 7\n"
    )
    assert result.returncode == 0
    # a name the guest creates goes where it said, not into the sysroot
    assert (work / "outside").read_bytes() == b"host file"
    assert not (root / str(work).lstrip("/")).exists()


def test_without_the_sysroot_the_probe_is_missing(tmp_path: Path) -> None:
    result = run_guest(
        "riscv64",
        fixture_path("riscv64", "fs_ops", "static"),
        "sysroot",
        f"{PROBE_DIR}/file",
        f"{PROBE_DIR}/link",
        f"{PROBE_DIR}/prog",
        options=("-L", str(tmp_path)),
        cwd=tmp_path,
    )
    assert result.stdout.startswith(
        b"open in the sysroot: -1 ENOENT\nstat in the sysroot: -1 ENOENT\n"
    )
    assert result.stdout.endswith(b"execl: -1 ENOENT\nexec from the sysroot: exit status: 1\n")
    assert result.returncode == 0
