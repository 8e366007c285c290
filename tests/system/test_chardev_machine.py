"""-serial, -monitor and -chardev in every form QEMU takes, on a running machine: sockets
(tcp and unix, server with wait), pipes, a pty, HMP on stdio and on tcp, -S with `cont` typed
at the mon:stdio monitor, and -daemonize."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from pathlib import Path

from tests.system.conftest import BIN, fixture

HELLO = "hello from aarch64 virt\n"


def start(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "qemuser-system-aarch64"), "-M", "virt", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def read_until(sock: socket.socket, wanted: bytes, timeout: float = 60) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while wanted not in data and time.monotonic() < deadline:
        if select.select([sock], [], [], 1)[0]:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def connect_tcp(port: int) -> socket.socket:
    for _ in range(400):
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            time.sleep(0.05)
    raise AssertionError("nothing listens")


def test_serial_on_a_waiting_tcp_server() -> None:
    port = free_port()
    proc = start("-serial", f"tcp:127.0.0.1:{port},server=on,wait=on", "-kernel",
                 str(fixture("hello-aarch64.elf")))  # fmt: skip
    try:
        with connect_tcp(port) as conn:
            assert read_until(conn, HELLO.encode()) == HELLO.encode()
        assert proc.wait(60) == 0
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    assert err == f"QEMU waiting for connection on: disconnected:tcp:127.0.0.1:{port},server=on\n"


def test_serial_on_a_unix_socket_chardev(tmp_path: Path) -> None:
    path = tmp_path / "serial.sock"
    proc = start("-chardev", f"socket,id=s0,path={path},server=on,wait=on", "-serial",
                 "chardev:s0", "-kernel", str(fixture("hello-aarch64.elf")))  # fmt: skip
    try:
        for _ in range(400):
            if path.exists():
                break
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(path))
            assert read_until(conn, HELLO.encode()) == HELLO.encode()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()


def test_serial_on_pipes_and_pty(tmp_path: Path) -> None:
    base = tmp_path / "con"
    os.mkfifo(f"{base}.in")
    os.mkfifo(f"{base}.out")
    proc = start("-serial", f"pipe:{base}", "-kernel", str(fixture("hello-aarch64.elf")))
    try:
        with open(f"{base}.out", "rb") as out:
            assert out.read(len(HELLO)) == HELLO.encode()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    result = subprocess.run(
        [str(BIN / "qemuser-system-aarch64"), "-M", "virt", "-serial", "pty", "-kernel",
         str(fixture("hello-aarch64.elf"))],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stderr.startswith("char device redirected to /dev/pts/")
    assert result.stderr.endswith(" (label serial0)\n")


def test_hmp_on_tcp_and_on_stdio(tmp_path: Path) -> None:
    port = free_port()
    spin = tmp_path / "spin.bin"
    spin.write_bytes(bytes.fromhex("00000014"))
    proc = start("-nodefaults", "-monitor", f"tcp:127.0.0.1:{port},server=on,wait=off",
                 "-kernel", str(spin))  # fmt: skip
    try:
        with connect_tcp(port) as conn:
            banner = read_until(conn, b"(qemu) ")
            conn.sendall(b"stop\r\ninfo status\r\n")
            status = read_until(conn, b"VM status: paused")
            conn.sendall(b"quit\r\n")
            read_until(conn, b"quit")
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    assert banner == b"QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) "
    assert b"VM status: paused\r\n" in status
    serial = tmp_path / "serial"
    result = subprocess.run(
        [str(BIN / "qemuser-system-aarch64"), "-M", "virt", "-S", "-monitor", "stdio",
         "-serial", f"file:{serial}", "-kernel", str(fixture("hello-aarch64.elf"))],
        input="info status\ncont\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "VM status: paused (prelaunch)" in result.stdout
    assert serial.read_text() == HELLO  # `cont` ran the guest, which powered off


def test_dash_s_waits_for_cont_typed_at_the_mux_monitor() -> None:
    read_end, write_end = os.pipe()
    proc = start("-nographic", "-S", "-kernel", str(fixture("hello-aarch64.elf")),
                 stdin=read_end)  # fmt: skip
    os.close(read_end)
    try:
        time.sleep(1)
        assert proc.poll() is None  # frozen at start-up
        os.write(write_end, b"\x01ccont\r")
        out, _err = proc.communicate(timeout=60)
    finally:
        os.close(write_end)
        proc.kill()
    assert proc.returncode == 0
    assert out.decode().endswith(f"(qemu) cont\r\n(qemu) {HELLO}")


def test_daemonize_detaches_after_setup(tmp_path: Path) -> None:
    serial, pidfile = tmp_path / "serial", tmp_path / "pid"
    sock = tmp_path / "qmp.sock"
    spin = tmp_path / "spin.bin"
    spin.write_bytes(bytes.fromhex("00000014"))
    result = subprocess.run(
        [str(BIN / "qemuser-system-aarch64"), "-M", "virt", "-daemonize", "-pidfile",
         str(pidfile), "-serial", f"file:{serial}", "-qmp", f"unix:{sock},server=on,wait=off",
         "-kernel", str(spin)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    os.kill(pid, 0)  # the detached machine runs
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(sock))
        read_until(conn, b"capabilities")
        conn.sendall(b'{"execute":"qmp_capabilities"}{"execute":"quit"}')
        read_until(conn, b"SHUTDOWN")
    for _ in range(200):
        if not pidfile.exists():
            break
        time.sleep(0.05)
    assert not pidfile.exists()


def test_nographic_with_a_serial_elsewhere_puts_the_monitor_on_stdio(tmp_path: Path) -> None:
    serial = tmp_path / "serial"
    spin = tmp_path / "spin.bin"
    spin.write_bytes(bytes.fromhex("00000014"))
    result = subprocess.run(
        [str(BIN / "qemuser-system-aarch64"), "-M", "virt", "-nographic", "-serial",
         f"file:{serial}", "-kernel", str(spin)],
        input="info status\nquit\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("QEMU 7.2.0 monitor - type 'help' for more information")
    assert "VM status: running" in result.stdout
