"""qemuser-nbd serving QEMU's NBD client (qemu-img, qemu-io with nbd:// URLs)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.block.conftest import VENV_BIN, digest, qemu_check, run

MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(*args: str | Path, wait_for: tuple[str, int] | str) -> Iterator[subprocess.Popen]:
    p = subprocess.Popen([VENV_BIN / "qemuser-nbd", *map(str, args)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            if isinstance(wait_for, str):
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(wait_for)
            else:
                # a connection would be the one client a non-persistent server takes: poll
                # the listening socket through /proc instead
                port_hex = f":{wait_for[1]:04X}"
                with open("/proc/net/tcp") as f:
                    if not any(port_hex in ln.split()[1] and ln.split()[3] == "0A" for ln in f):
                        raise OSError
            break
        except OSError:
            if p.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"qemuser-nbd did not start: {p.stderr.read()!r}") from None
            time.sleep(0.05)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)


def make_image(tmp_path: Path) -> tuple[Path, Path]:
    raw = tmp_path / "d.raw"
    raw.write_bytes(os.urandom(MiB) + bytes(MiB) + b"q" * MiB)
    img = tmp_path / "d.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img)
    return raw, img


def test_qemu_img_compare_over_tcp(tmp_path: Path) -> None:
    raw, img = make_image(tmp_path)
    port = free_port()
    before = digest(img)
    with server(
        "-r", "-x", "disk", "-p", port, "-b", "127.0.0.1", img, wait_for=("127.0.0.1", port)
    ) as p:
        r = run("qemu-img", "compare", f"nbd://127.0.0.1:{port}/disk", raw, check=False)
        assert (r.returncode, r.stdout) == (0, "Images are identical.\n"), r.stderr
        p.wait(timeout=10)  # without -t it exits after its client
        assert p.returncode == 0
    assert digest(img) == before


def test_writes_over_unix_socket_persistent(tmp_path: Path) -> None:
    raw, img = make_image(tmp_path)
    sock = tmp_path / "nbd.sock"
    url = f"nbd+unix:///exp?socket={sock}"
    with server("-t", "-x", "exp", "-k", sock, "-f", "qcow2", img, wait_for=str(sock)):
        run(
            "qemu-io",
            "-f",
            "raw",
            "-c",
            "write -P 0x42 100k 200k",
            "-c",
            "write -z 2M 64k",
            "-c",
            "discard 1M 64k",
            "-c",
            "flush",
            url,
        )
        r = run(
            "qemu-io", "-f", "raw", "-c", "read -P 0x42 100k 200k", "-c", "read -P 0 2M 64k", url
        )
        assert "read 204800/204800 bytes at offset 102400" in r.stdout
        # block status (base:allocation) reaches QEMU's map
        m = run("qemu-img", "map", "--output=json", "-f", "raw", url).stdout
        assert '"zero": true' in m and '"data": true' in m
    qemu_check(img)
    run("qemu-io", "-c", "read -P 0x42 100k 200k", "-c", "read -P 0 2M 64k", img)


def test_read_only_refuses_writes(tmp_path: Path) -> None:
    raw, img = make_image(tmp_path)
    port = free_port()
    before = digest(img)
    with server("-r", "-t", "-p", port, "-b", "127.0.0.1", img, wait_for=("127.0.0.1", port)):
        r = run("qemu-io", "-f", "raw", "-c", "write 0 512", f"nbd://127.0.0.1:{port}", check=False)
        assert r.returncode == 1
        r = run("qemu-img", "info", "--output=json", f"nbd://127.0.0.1:{port}")
        assert '"virtual-size": 3145728' in r.stdout
    assert digest(img) == before


def test_fork_and_snapshot_mode(tmp_path: Path) -> None:
    raw, img = make_image(tmp_path)
    port = free_port()
    pid_file = tmp_path / "pid"
    before = digest(img)
    run(
        "qemuser-nbd",
        "--fork",
        "--pid-file",
        pid_file,
        "-s",
        "-t",
        "-p",
        port,
        "-b",
        "127.0.0.1",
        "-x",
        "s",
        img,
    )
    try:
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text().strip():
                break
            time.sleep(0.05)
        url = f"nbd://127.0.0.1:{port}/s"
        run("qemu-io", "-f", "raw", "-c", "write -P 0x17 0 64k", url)
        run("qemu-io", "-f", "raw", "-c", "read -P 0x17 0 64k", url)
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    assert digest(img) == before  # -s: the writes went to a temporary overlay
