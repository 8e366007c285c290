"""A real Debian arm64 userland under qemuser: bash pipelines whose every stage is a foreign
fork+exec, CPython with threads, subprocesses, sqlite3, tempfile and sockets, and busybox's
shell tools. Each gives the output the same commands give natively on the x86_64 host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_guest
from tests.real.test_debian_arm64 import debian_root  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).parent / "scripts"

# Every stage runs from the arm64 root: /usr/bin/... resolves inside the sysroot first.
BASH_PIPELINES = r"""
seq 1 20 | sort -rn | head -5 | tr '\n' ' '; echo
printf '%s\n' pear apple fig apple | sort | uniq -c | sort -rn
false | true; echo "pipestatus ${PIPESTATUS[*]}"
words=$(echo one two three | wc -w); echo "words $words"
for f in a b c; do echo "$f" | tr a-z A-Z; done | paste -sd,
(exit 7); echo "subshell $?"
echo text > "$TMPDIR/f"; cat "$TMPDIR/f" | grep -c text; ls "$TMPDIR" | wc -l
sh_status() { "$@"; echo "status $?"; }; sh_status test 1 -gt 2
exit 4
"""


def _environment(tmp_path: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "LC_ALL": "C", "HOME": "/"}


def test_bash_pipelines_of_foreign_coreutils(debian_root: Path, tmp_path: Path) -> None:  # noqa: F811
    guest_tmp = tmp_path / "guest"
    host_tmp = tmp_path / "host"
    guest_tmp.mkdir()
    host_tmp.mkdir()
    host = subprocess.run(
        ["/bin/bash", "-c", BASH_PIPELINES], capture_output=True, env=_environment(host_tmp)
    )
    guest = run_guest(
        "aarch64",
        debian_root / "bin" / "bash",
        "-c",
        BASH_PIPELINES,
        options=("-L", str(debian_root)),
        env={**os.environ, **_environment(guest_tmp)},
    )
    assert host.returncode == 4
    assert guest.stdout == host.stdout
    assert guest.stderr == host.stderr
    assert guest.returncode == 4


def test_cpython_threads_subprocess_sqlite_tempfile_sockets(
    debian_root: Path,  # noqa: F811
) -> None:
    script = SCRIPTS / "py_processes.py"
    host = subprocess.run([sys.executable, str(script)], capture_output=True)
    guest = run_guest(
        "aarch64",
        debian_root / "usr" / "bin" / "python3.11",
        str(script),
        options=("-L", str(debian_root)),
        env={**os.environ, "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    assert host.returncode == 0
    assert guest.stdout == host.stdout
    assert guest.returncode == 0


BUSYBOX_TOOLS = r"""
echo 'a b c' | awk '{print $2, NF}'
echo hello | sed 's/l/L/g'
cd "$TMPDIR" && mkdir -p d/e && echo x > d/e/f && echo y > d/g
tar cf t.tar d && mkdir out && tar xf t.tar -C out && find out -type f | sort
cat out/d/e/f out/d/g
find d -name 'f*' -type f
echo "last $?"
"""


def test_busybox_shell_tools(debian_root: Path, tmp_path: Path) -> None:  # noqa: F811
    result = run_guest(
        "aarch64",
        debian_root / "bin" / "busybox",
        "sh",
        "-c",
        BUSYBOX_TOOLS,
        options=("-L", str(debian_root)),
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.stdout == (b"b 3\nheLLo\nout/d/e/f\nout/d/g\nx\ny\nd/e/f\nlast 0\n")
    assert result.returncode == 0


RESOLVE = (
    "import socket\n"
    "print(sorted({a[4][0] for a in socket.getaddrinfo('localhost', 80,"
    " proto=socket.IPPROTO_TCP)}))\n"
    "print(socket.gethostbyname('localhost'))\n"
)


def test_getaddrinfo_reads_the_hosts_file(debian_root: Path) -> None:  # noqa: F811
    """The sysroot has no /etc/hosts, so glibc's files backend reads the host's, as under
    qemu-user; the answer is the host's own."""
    host = subprocess.run([sys.executable, "-c", RESOLVE], capture_output=True)
    guest = run_guest(
        "aarch64",
        debian_root / "usr" / "bin" / "python3.11",
        "-c",
        RESOLVE,
        options=("-L", str(debian_root)),
    )
    assert host.returncode == 0
    assert guest.stdout == host.stdout
    assert guest.returncode == 0
