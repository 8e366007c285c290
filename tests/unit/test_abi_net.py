"""Guest numbers of sockets and polling, and the control-message and sockaddr code.

The numbers are held against the cross compilers' kernel headers and against the x86_64 host's,
which is what lets the handlers pass option values and addresses through unchanged (the
structs' sizes and offsets are in test_abi_layouts.py).
"""

from __future__ import annotations

import re
import select
import socket
from pathlib import Path

import pytest

from qemuser.syscalls import net, poll
from qemuser.syscalls.abi import sockets


def _header_defines(path: Path, prefix: str) -> dict[str, int]:
    defines = {}
    for match in re.finditer(rf"#define\s+({prefix}\w*)\s+(\d+)\b", path.read_text()):
        defines[match.group(1)] = int(match.group(2))
    return defines


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_socket_option_numbers_match_the_guest_headers(arch: str) -> None:
    header = Path(f"/usr/{arch}-linux-gnu/include/asm-generic/socket.h")
    if not header.exists():
        pytest.skip(f"no {arch} kernel headers")
    defines = _header_defines(header, "SO_")
    aliases = {
        "SO_RCVTIMEO": "SO_RCVTIMEO_OLD",
        "SO_SNDTIMEO": "SO_SNDTIMEO_OLD",
        "SO_TIMESTAMP": "SO_TIMESTAMP_OLD",
    }
    for number, name in net.SO_NAMES.items():
        assert defines[aliases.get(name, name)] == number, name
    assert _header_defines(header, "SOL_SOCKET")["SOL_SOCKET"] == net.SOL_SOCKET


def test_guest_numbers_equal_the_hosts() -> None:
    """The pass-through of sockaddrs, option values and flags rests on this."""
    assert net.AF_INET == socket.AF_INET
    assert net.AF_INET6 == socket.AF_INET6
    assert net.AF_UNIX == socket.AF_UNIX
    assert net.SOCK_STREAM == socket.SOCK_STREAM
    assert net.SOCK_DGRAM == socket.SOCK_DGRAM
    assert net.SOCK_NONBLOCK == socket.SOCK_NONBLOCK
    assert net.SOCK_CLOEXEC == socket.SOCK_CLOEXEC
    assert net.SOL_SOCKET == socket.SOL_SOCKET
    assert net.SOL_TCP == socket.SOL_TCP
    assert net.SOL_IPV6 == socket.IPPROTO_IPV6
    assert net.SCM_RIGHTS == socket.SCM_RIGHTS
    assert net.SCM_CREDENTIALS == socket.SCM_CREDENTIALS
    for number, name in net.SO_NAMES.items():
        if hasattr(socket, name):
            assert getattr(socket, name) == number, name
    for number, name in net.MSG_NAMES.items():
        if hasattr(socket, name):
            assert getattr(socket, name) == number, name
    for number, name in net.TCP_NAMES.items():
        if hasattr(socket, name):
            assert getattr(socket, name) == number, name
    assert socket.IPV6_V6ONLY == 26
    for number, name in poll.POLL_NAMES.items():
        if hasattr(select, name):
            assert getattr(select, name) == number, name


def test_control_messages_are_parsed_and_rebuilt() -> None:
    rights = (net.SOL_SOCKET, net.SCM_RIGHTS, (5).to_bytes(4, "little") + (7).to_bytes(4, "little"))
    creds = (net.SOL_SOCKET, net.SCM_CREDENTIALS, sockets.UCRED.pack(pid=1, uid=2, gid=3))
    one_fd = (net.SOL_SOCKET, net.SCM_RIGHTS, (9).to_bytes(4, "little"))
    data = net.build_control([rights, creds, one_fd])
    # CMSG_SPACE(8) + CMSG_SPACE(12) + CMSG_SPACE(4) = 24 + 32 + 24
    assert len(data) == 80
    assert net.parse_control(data) == [rights, creds, one_fd]


def test_control_cut_to_the_guest_buffer_sets_truncation() -> None:
    data = net.build_control(
        [
            (net.SOL_SOCKET, net.SCM_RIGHTS, bytes(4)),
            (net.SOL_SOCKET, net.SCM_CREDENTIALS, bytes(12)),
        ]
    )
    whole, cut = net.control_to_guest(data, 200)
    assert (whole, cut) == (data, False)
    first_only, cut = net.control_to_guest(data, 30)
    assert cut and len(first_only) == 24
    # the last message may lose only its tail padding (CMSG_LEN, not CMSG_SPACE)
    exact, cut = net.control_to_guest(data, 24 + 28)
    assert not cut and len(exact) == 52


def test_malformed_control_message_is_einval() -> None:
    bad = sockets.CMSGHDR.pack(cmsg_len=8, cmsg_level=1, cmsg_type=1)
    with pytest.raises(OSError) as caught:
        net.parse_control(bad)
    assert caught.value.errno == 22


def test_sockaddr_formatting() -> None:
    inet = sockets.SOCKADDR_IN.pack(
        sin_family=2, sin_port=(8080).to_bytes(2, "big"), sin_addr=bytes([127, 0, 0, 1])
    )
    assert net.format_sockaddr(inet) == (
        '{sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}'
    )
    abstract = (1).to_bytes(2, "little") + b"\0name"
    assert net.format_sockaddr(abstract) == '{sa_family=AF_UNIX, sun_path=@"name"}'
