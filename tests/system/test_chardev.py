"""Chardev backends as -chardev/-serial/-monitor make them: where the bytes go and come from, and
QEMU's errors for bad specs (the messages are those Debian's QEMU 7.2 printed)."""

from __future__ import annotations

import os
import socket
import time

import pytest

from qemuser.system.chardev.backends import RingbufChardev
from qemuser.system.chardev.sockets import ChardevError
from qemuser.system.chardev.spec import (
    ChardevSpec,
    open_chardev,
    parse_chardev_option,
    parse_legacy,
    split_options,
)


def read_until(dev, wanted: bytes, timeout: float = 5.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while wanted not in got and time.monotonic() < deadline:
        got += dev.read()
        time.sleep(0.01)
    return got


def test_file_backend_writes_and_truncates(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old contents")
    dev = open_chardev(parse_chardev_option(f"file,id=f0,path={path}"))
    dev.write(b"hello\r\n")
    dev.close()
    assert path.read_bytes() == b"hello\r\n"
    dev = open_chardev(parse_chardev_option(f"file,id=f0,path={path},append=on"))
    dev.write(b"more\n")
    dev.close()
    assert path.read_bytes() == b"hello\r\nmore\n"
    assert dev.filename == str(path)


def test_pipe_backend_uses_in_and_out_fifos(tmp_path):
    base = tmp_path / "serial"
    os.mkfifo(f"{base}.in")
    os.mkfifo(f"{base}.out")
    reader = os.open(f"{base}.out", os.O_RDONLY | os.O_NONBLOCK)
    dev = open_chardev(parse_legacy(f"pipe:{base}", "serial0"))
    writer = os.open(f"{base}.in", os.O_WRONLY)
    dev.write(b"to host")
    assert os.read(reader, 100) == b"to host"
    os.write(writer, b"to guest")
    assert read_until(dev, b"to guest") == b"to guest"
    for fd in (reader, writer):
        os.close(fd)
    dev.close()


def test_pty_backend_names_its_terminal(capfd):
    dev = open_chardev(parse_legacy("pty", "serial0"))
    err = capfd.readouterr().err
    assert err.startswith("char device redirected to /dev/pts/") and err.endswith(
        "(label serial0)\n"
    )
    name = dev.filename.removeprefix("pty:")
    peer = os.open(name, os.O_RDWR | os.O_NOCTTY)
    dev.write(b"ping")
    assert os.read(peer, 100) == b"ping"
    os.write(peer, b"pong")
    assert read_until(dev, b"pong") == b"pong"
    os.close(peer)
    dev.close()


def test_unix_socket_server_without_wait(tmp_path):
    path = tmp_path / "serial.sock"
    dev = open_chardev(parse_chardev_option(f"socket,id=s0,path={path},server=on,wait=off"))
    assert dev.filename == f"disconnected:unix:{path},server=on"
    dev.write(b"dropped: nobody is connected")
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(path))
    deadline = time.monotonic() + 5
    while dev.filename.startswith("disconnected") and time.monotonic() < deadline:
        time.sleep(0.01)
    dev.write(b"hello client")
    client.settimeout(5)
    assert client.recv(100) == b"hello client"
    client.sendall(b"typed")
    assert read_until(dev, b"typed") == b"typed"
    client.close()
    dev.close()
    assert not path.exists()


def test_tcp_client_with_reconnect():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()  # nothing listens yet: the client retries every second
    dev = open_chardev(parse_chardev_option(f"socket,id=c0,host=127.0.0.1,port={port},reconnect=1"))
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(1)
    server.settimeout(5)
    conn, _ = server.accept()
    deadline = time.monotonic() + 5
    while dev.filename.startswith("disconnected") and time.monotonic() < deadline:
        time.sleep(0.01)
    dev.write(b"from the guest")
    conn.settimeout(5)
    assert conn.recv(100) == b"from the guest"
    conn.close()
    server.close()
    dev.close()


def test_ringbuf_keeps_the_newest_bytes():
    dev = open_chardev(parse_chardev_option("ringbuf,id=r0,size=8"))
    assert isinstance(dev, RingbufChardev)
    dev.write(b"0123456789")
    assert dev.take(100) == b"23456789"


def test_legacy_forms():
    assert parse_legacy("chardev:foo", "serial0") == "foo"
    assert parse_legacy("none", "serial0") == "none"
    assert parse_legacy("mon:stdio", "serial0") == ChardevSpec("serial0", "stdio", {}, mux=True)
    assert parse_legacy("file:/tmp/x", "serial1") == ChardevSpec(
        "serial1", "file", {"path": "/tmp/x"}
    )
    assert split_options("file,id=a,path=/tmp/a,,b") == [
        ("file", ""),
        ("id", "a"),
        ("path", "/tmp/a,b"),
    ]


@pytest.mark.parametrize(
    ("option", "message"),
    [  # QEMU 7.2's words for the same options
        ("null", "chardev: no id specified"),
        ("bogus,id=x", "'bogus' is not a valid char driver name"),
        ("null,id=x,foo=1", "Invalid parameter 'foo'"),
        ("file,id=x", "chardev: file: no filename given"),
        ("null,id=x,mux=maybe", "Parameter 'mux' expects 'on' or 'off'"),
        ("ringbuf,id=x,size=3", "size of ringbuf chardev must be power of two"),
        ("socket,id=x,path=/tmp/zz,server=maybe", "Parameter 'server' expects 'on' or 'off'"),
        (
            "socket,id=x,path=/nonexist/zz,server=on,wait=off",
            "Failed to bind socket to /nonexist/zz: No such file or directory",
        ),
        (
            "socket,id=x,path=/nonexist/client",
            "Failed to connect to '/nonexist/client': No such file or directory",
        ),
        ("file,id=x,path=/nonexist/f", "Could not open '/nonexist/f': No such file or directory"),
    ],
)
def test_errors_as_qemu(option, message):
    with pytest.raises(ChardevError) as caught:
        open_chardev(parse_chardev_option(option))
    assert str(caught.value) == message


def test_bad_legacy_form():
    with pytest.raises(ChardevError, match="^'bogus' is not a valid char driver$"):
        parse_legacy("bogus", "serial0")
