"""debootstrap's two stages, as image builders run them: the first on the host (download and
unpack Debian arm64's minbase), the second in a chroot of it, where every program is foreign
and dpkg runs all maintainer scripts: thousands of foreign execs through the handler. Minutes."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from qemuser.binfmt.build import deb_src_lines


def machine_mirror() -> str:
    """The Debian archive of this machine's apt sources (read now, as the issue asks)."""
    for line in deb_src_lines():
        found = re.search(r"(\S+/debian)/? bookworm ", line)
        if found:
            return found.group(1)
    pytest.skip("no Debian bookworm archive in /etc/apt")


@pytest.mark.slow
def test_debootstrap_second_stage(registered, tmp_path):
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (apt-get install debootstrap)")
    root = tmp_path / "root"
    first = subprocess.run(
        ["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", "bookworm", str(root)]
        + [machine_mirror()],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if first.returncode != 0:
        pytest.skip(f"debootstrap's first stage failed (network?): {first.stderr[-300:]}")
    # a private mount namespace: what the second stage mounts stays in it
    second = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "chroot", str(root)]
        + ["/debootstrap/debootstrap", "--second-stage"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert second.stdout.rstrip().endswith("I: Base system installed successfully.")
    status = (root / "var/lib/dpkg/status").read_text()
    assert status.count("Status: install ok installed") > 80
    assert "Status: install ok unpacked" not in status and "half-configured" not in status
    # the result is a working arm64 Debian, through the same handler
    result = subprocess.run(
        [
            "chroot",
            str(root),
            "/bin/sh",
            "-c",
            "dpkg --print-architecture; cat /etc/debian_version",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.splitlines()[0] == "arm64", result.stderr
    assert result.stdout.splitlines()[1].startswith("12.")
