"""Fixtures of the container tests: qemuser registered with its defaults (flags POF, the static
interpreter), the Debian arm64 image root, and a private podman store.

binfmt_misc is restored exactly as found after every test, also on failure (the `binfmt`
fixture of tests/cli/test_binfmt_kernel.py, which also serialises the tests that register).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.test_binfmt_kernel import binfmt, binfmt_cli  # noqa: F401  (fixture)
from tests.containers.images import image_root

# What podman needs on this kind of machine (a VM whose limits podman cannot raise, no
# network namespace setup wanted): rootful, runc, no network, explicit ulimits.
PODMAN_OPTIONS = ("--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "none")
RUN_OPTIONS = (
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
)


@pytest.fixture
def registered(binfmt: Path) -> Path:  # noqa: F811
    """qemuser's aarch64 handler installed as a user would: `qemuser-binfmt install` with the
    defaults (taking over from another handler of aarch64 ELF files, given back afterwards)."""
    out = binfmt_cli("install", "--arch", "aarch64", "--replace").stdout
    assert "flags 'POF'" in out, out
    entry = Path("/proc/sys/fs/binfmt_misc/qemuser-aarch64").read_text()
    assert "flags: POF\n" in entry
    interpreter = Path(entry.split("interpreter ", 1)[1].split("\n", 1)[0])
    assert not interpreter.with_name(interpreter.name + ".py").exists()  # no Python script
    return binfmt


@pytest.fixture(scope="session")
def arm64_root() -> Path:
    try:
        return image_root()
    except (OSError, subprocess.CalledProcessError, RuntimeError) as err:
        pytest.skip(f"no Debian arm64 root (run ./setup.sh as root): {err}")


@pytest.fixture
def root_copy(arm64_root: Path, tmp_path: Path) -> Path:
    """A copy of the root this test may change (chroot, pivot_root)."""
    target = tmp_path / "root"
    shutil.copytree(arm64_root, target, symlinks=True)
    tmp_path.chmod(0o755)
    return target


@dataclass(frozen=True)
class Podman:
    """podman with its own store (images and containers of these tests only)."""

    store: Path

    def command(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.store / "storage"),
            "--runroot",
            str(self.store / "run"),
            *PODMAN_OPTIONS,
            *args,
        ]

    def __call__(self, *args: str, input: bytes | None = None, timeout: float = 600):
        return subprocess.run(
            self.command(*args), input=input, capture_output=True, timeout=timeout
        )


@pytest.fixture(scope="session")
def podman_store() -> Iterator[Podman]:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.skip("podman or runc is not installed (apt-get install podman runc)")
    store = Path(tempfile.mkdtemp(prefix="qemuser-podman-"))
    podman = Podman(store)
    try:
        yield podman
    finally:
        podman("rm", "--all", "--force", timeout=120)
        podman("rmi", "--all", "--force", timeout=120)
        subprocess.run(["umount", "-R", str(store / "storage" / "overlay")], capture_output=True)
        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture(scope="session")
def arm64_image(podman_store: Podman, arm64_root: Path) -> str:
    """The root imported as an arm64 image (`podman import` of a tar of it)."""
    name = "localhost/qemuser-debian-arm64:test"
    tar = subprocess.run(["tar", "-C", str(arm64_root), "-cf", "-", "."], capture_output=True)
    assert tar.returncode == 0, tar.stderr
    result = podman_store("import", "--arch", "arm64", "-", name, input=tar.stdout)
    assert result.returncode == 0, result.stderr
    return name
