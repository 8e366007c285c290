"""Single-process sockets: TCP with a non-blocking connect and poll, UDP, UNIX socketpairs with
SCM_RIGHTS and SCM_CREDENTIALS, names, options and errors.

Each run must print what the same source prints built for the host (including the IPv6 lines,
which depend on whether the host has ::1) and exit as it does.
"""

from __future__ import annotations

import pytest

from tests.conftest import fixture_path, run_guest, run_like_native

BUILDS = [(arch, flavour) for arch in ("aarch64", "riscv64") for flavour in ("static", "dynamic")]


@pytest.mark.parametrize(("arch", "flavour"), BUILDS)
def test_sockets_in_one_process(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "net_sockets", flavour, status=0)
    assert result.stderr == b""


def test_strace_decodes_socket_addresses() -> None:
    result = run_guest("aarch64", fixture_path("aarch64", "net_sockets"), options=("-strace",))
    assert result.returncode == 0
    trace = result.stderr.decode()
    assert (
        'bind(3,{sa_family=AF_INET, sin_port=htons(0), sin_addr=inet_addr("127.0.0.1")},16) = 0'
        in trace
    )
    assert "socket(AF_INET,SOCK_STREAM|SOCK_CLOEXEC,0) = 3" in trace
    assert "setsockopt(3,SOL_SOCKET,SO_REUSEADDR," in trace
    assert "connect(4," in trace and "= -1 errno=115 (EINPROGRESS" in trace
    assert "ppoll([{fd=4, events=POLLOUT, revents=POLLOUT}],1," in trace
