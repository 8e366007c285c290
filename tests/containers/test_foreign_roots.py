"""Foreign roots without any help from the host: a chroot without /proc, a private mount and
pid namespace after pivot_root. Through qemuser-binfmt's defaults (POF): the kernel opened the
static interpreter at registration, so nothing of qemuser, no Python and no /proc is needed
inside, and nothing is written there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_binfmt_kernel import binfmt_cli

SCRIPT = (
    'echo "$0 $(uname -m)"; cd /etc && pwd; echo $(ls /);'
    " python3.11 -c \"import os, sys; print(6 * 7, sys.platform, os.path.exists('/proc'))\";"
    " /bin/busybox echo nested | tr a-z A-Z; exit 7"
)
EXPECTED = b"/bin/bash aarch64\n/etc\n%s\n42 linux False\nNESTED\n"


def listing(root: Path) -> bytes:
    return " ".join(sorted(p.name for p in root.iterdir() if not p.name.startswith("."))).encode()


def tree(root: Path) -> set[tuple[str, int, int]]:
    """Every path below root with its size and mtime: to see that nothing was written."""
    found = set()
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top) / name
            info = path.lstat()
            found.add((str(path.relative_to(root)), info.st_size, info.st_mtime_ns))
    return found


def test_chroot_without_proc(registered, root_copy):
    assert not (root_copy / "proc").exists()
    before = tree(root_copy)
    result = subprocess.run(
        ["chroot", str(root_copy), "/bin/bash", "-c", SCRIPT], capture_output=True, timeout=300
    )
    assert result.stdout == EXPECTED % listing(root_copy), result.stderr
    assert (result.returncode, result.stderr) == (7, b"")
    assert tree(root_copy) == before


def test_chroot_runs_unreadable_binary_with_open_binary(registered, root_copy):
    """O is a default: a 0711 foreign binary runs for a user who cannot read it (the kernel
    passes its open fd); without O the interpreter, running as that user, cannot open it."""
    os.chmod(root_copy / "bin/busybox", 0o711)
    command = ["chroot", "--userspec=65534:65534", str(root_copy), "/bin/busybox", "echo", "ok"]
    result = subprocess.run(command, capture_output=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"ok\n", b"")
    binfmt_cli("install", "--arch", "aarch64", "--no-open-binary")
    result = subprocess.run(command, capture_output=True, timeout=120)
    assert result.returncode != 0 and result.stdout == b""
    assert b"Permission denied" in result.stderr


@pytest.fixture(scope="module")
def enter_root(tmp_path_factory) -> Path:
    """tests/containers/enter_root.c: pivot_root into a root and exec, as runc does."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("enter") / "enter_root"
    source = Path(__file__).with_name("enter_root.c")
    subprocess.run(["cc", "-O2", "-static", "-o", str(out), str(source)], check=True)
    out.parent.chmod(0o755)
    return out


def test_pivot_root_in_new_mount_and_pid_namespace(registered, root_copy, enter_root):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    before = tree(root_copy)
    script = 'echo "pid $$"; ' + SCRIPT
    command = ["unshare", "--mount", "--pid", "--fork", str(enter_root), str(root_copy)]
    result = subprocess.run([*command, "/bin/bash", "-c", script], capture_output=True, timeout=300)
    assert result.stdout == b"pid 1\n" + EXPECTED % listing(root_copy), result.stderr
    assert (result.returncode, result.stderr) == (7, b"")
    assert tree(root_copy) == before
