"""Real Debian arm64 programs (busybox-static, python3.11) give the same output as on Linux."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_guest
from tests.real.debroot import ensure_root

pytestmark = pytest.mark.slow

PY_CODE = (
    "import json, hashlib\n"
    "data = {'sha256': hashlib.sha256(b'qemuser' * 1000).hexdigest(),\n"
    "        'md5': hashlib.md5(b'abc').hexdigest(),\n"
    "        'squares': [i * i for i in range(12)], 'text': 'h\\u00e9llo', 'f': 1 / 3}\n"
    "print(json.dumps(data, sort_keys=True))\n"
    "print(json.loads(json.dumps(data)) == data)\n"
)


@pytest.fixture(scope="session")
def debian_root() -> Path:
    try:
        return ensure_root()
    except (OSError, subprocess.CalledProcessError, RuntimeError) as err:
        pytest.fail(f"cannot fetch the Debian arm64 packages (run ./setup.sh as root): {err}")


def busybox(root: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return run_guest(
        "aarch64", root / "bin" / "busybox", *args, options=("-L", str(root)), input=input
    )


def test_busybox_echo(debian_root: Path) -> None:
    result = busybox(debian_root, "echo", "hello", "two words", "-n")
    assert result.stdout == b"hello two words -n\n"
    assert result.stderr == b""
    assert result.returncode == 0


def test_busybox_sha256sum_matches_host(debian_root: Path, tmp_path: Path) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(
        b"".join(hashlib.sha512(bytes([i % 256, i // 256])).digest() for i in range(5000))
    )
    host = subprocess.run(["sha256sum", str(payload)], capture_output=True, check=True)
    result = busybox(debian_root, "sha256sum", str(payload))
    assert result.stdout == host.stdout
    assert result.stdout.startswith(hashlib.sha256(payload.read_bytes()).hexdigest().encode())
    assert result.returncode == 0


def test_busybox_sha256sum_missing_file_fails(debian_root: Path, tmp_path: Path) -> None:
    result = busybox(debian_root, "sha256sum", str(tmp_path / "absent"))
    assert result.stdout == b""
    assert b"No such file or directory" in result.stderr
    assert result.returncode == 1


def test_busybox_sh_pipeline_and_exit_status(debian_root: Path) -> None:
    result = busybox(
        debian_root, "sh", "-c", "echo hi; echo abc | tr a-z A-Z; busybox true; echo st=$?; exit 3"
    )
    assert result.stdout == b"hi\nABC\nst=0\n"
    assert result.returncode == 3


def test_python311_json_hashlib_matches_host(debian_root: Path) -> None:
    host = subprocess.run([sys.executable, "-c", PY_CODE], capture_output=True, check=True)
    result = run_guest(
        "aarch64",
        debian_root / "usr" / "bin" / "python3.11",
        "-c",
        PY_CODE,
        options=("-L", str(debian_root)),
    )
    assert result.stderr == b""
    assert result.stdout == host.stdout
    assert result.stdout.endswith(b"\nTrue\n")
    assert result.returncode == 0


def test_python311_exit_status(debian_root: Path) -> None:
    result = run_guest(
        "aarch64",
        debian_root / "usr" / "bin" / "python3.11",
        "-c",
        "import sys; print(sys.platform, sys.maxsize); sys.exit(7)",
        options=("-L", str(debian_root)),
    )
    assert result.stdout == f"linux {2**63 - 1}\n".encode()
    assert result.returncode == 7


def test_busybox_ionice_sets_and_reads_the_host_process_priority(debian_root: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pid = str(sleeper.pid)
        result = busybox(debian_root, "ionice", "-c", "2", "-n", "5", "-p", pid)
        assert (result.stdout, result.returncode) == (b"", 0)
        host = subprocess.run(["ionice", "-p", pid], capture_output=True, check=True)
        assert host.stdout == b"best-effort: prio 5\n"
        result = busybox(debian_root, "ionice", "-p", pid)
        assert result.stdout == b"best-effort: prio 5\n"
        assert result.returncode == 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_busybox_dmesg_reads_the_host_kernel_log(debian_root: Path) -> None:
    host = subprocess.run(["dmesg", "-r"], capture_output=True)
    result = busybox(debian_root, "dmesg")
    if host.returncode != 0:  # no CAP_SYSLOG here: the guest is refused alike
        assert result.returncode == 1
        assert b"klogctl" in result.stderr
        return
    assert result.returncode == 0

    # busybox reads the ring buffer through syslog(2) into a buffer of SYSLOG_ACTION_SIZE_BUFFER
    # bytes, so once the log is longer it starts later than util-linux's dmesg (which reads
    # /dev/kmsg): every record it prints is one of the host's, without the "<level>" -r shows.
    def text(line: bytes) -> bytes:  # a record's message: no <level>, no [timestamp]
        if line.startswith(b"<"):
            line = line.split(b">", 1)[1]
        if line.startswith(b"["):
            line = line.split(b"]", 1)[1]
        return line.strip()

    host_records = {text(line) for line in host.stdout.splitlines()}
    guest_records = result.stdout.splitlines()
    assert len(guest_records) > 10
    assert all(text(record) in host_records for record in guest_records[:-1])  # last: maybe new
