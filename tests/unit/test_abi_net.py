"""Guest layouts and numbers of sockets, polling, time and process information.

Sizes and offsets are those of the kernel's structs on a 64-bit asm-generic arch; the numbers
are held against the cross compilers' kernel headers and against the x86_64 host's, which is
what lets the handlers pass option values and addresses through unchanged.
"""

from __future__ import annotations

import re
import select
import socket
from pathlib import Path

import pytest

from qemuser.syscalls import net, poll, proc
from qemuser.syscalls import time as guest_time


@pytest.mark.parametrize(
    ("layout", "size", "offsets"),
    [
        (net.SOCKADDR_IN, 16, {"sin_family": 0, "sin_port": 2, "sin_addr": 4}),
        (
            net.SOCKADDR_IN6,
            28,
            {"sin6_port": 2, "sin6_flowinfo": 4, "sin6_addr": 8, "sin6_scope_id": 24},
        ),
        (net.SOCKADDR_UN, 110, {"sun_family": 0, "sun_path": 2}),
        (
            net.MSGHDR,
            56,
            {
                "msg_name": 0,
                "msg_namelen": 8,
                "msg_iov": 16,
                "msg_iovlen": 24,
                "msg_control": 32,
                "msg_controllen": 40,
                "msg_flags": 48,
            },
        ),
        (net.MMSGHDR, 64, {"msg_hdr": 0, "msg_len": 56}),
        (net.CMSGHDR, 16, {"cmsg_len": 0, "cmsg_level": 8, "cmsg_type": 12}),
        (net.UCRED, 12, {"pid": 0, "uid": 4, "gid": 8}),
        (net.LINGER, 8, {"l_onoff": 0, "l_linger": 4}),
        (net.SOCK_TIMEVAL, 16, {"tv_sec": 0, "tv_usec": 8}),
        (net.SOCK_FPROG, 16, {"len": 0, "filter": 8}),
        (poll.POLLFD, 8, {"fd": 0, "events": 4, "revents": 6}),
        (poll.SIGSET_ARGPACK, 16, {"p": 0, "size": 8}),
        (guest_time.TIMESPEC, 16, {"tv_sec": 0, "tv_nsec": 8}),
        (guest_time.TIMEVAL, 16, {"tv_sec": 0, "tv_usec": 8}),
        (guest_time.TIMEZONE, 8, {"tz_minuteswest": 0, "tz_dsttime": 4}),
        (guest_time.TMS, 32, {"tms_utime": 0, "tms_stime": 8, "tms_cutime": 16, "tms_cstime": 24}),
        (proc.RLIMIT64, 16, {"rlim_cur": 0, "rlim_max": 8}),
        (
            proc.RUSAGE,
            144,
            {"ru_utime_sec": 0, "ru_stime_usec": 24, "ru_maxrss": 32, "ru_nivcsw": 136},
        ),
        (
            proc.SYSINFO,
            112,
            {
                "uptime": 0,
                "loads": 8,
                "totalram": 32,
                "freeswap": 72,
                "procs": 80,
                "totalhigh": 88,
                "freehigh": 96,
                "mem_unit": 104,
            },
        ),
        (proc.UTSNAME, 390, {"sysname": 0, "nodename": 65, "machine": 260, "domainname": 325}),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_layout_size_and_offsets(layout, size: int, offsets: dict[str, int]) -> None:
    assert layout.size == size
    for field, offset in offsets.items():
        assert layout.offsets[field] == offset, field


def test_sysinfo_round_trips_through_its_layout() -> None:
    fields = {name: index + 1 for index, (name, _) in enumerate(proc.SYSINFO.fields)}
    fields["loads"] = (7, 8, 9)
    packed = proc._pack_sysinfo(fields)
    assert len(packed) == 112
    assert proc._unpack_sysinfo(packed) == fields


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
    creds = (net.SOL_SOCKET, net.SCM_CREDENTIALS, net.UCRED.pack(pid=1, uid=2, gid=3))
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
    bad = net.CMSGHDR.pack(cmsg_len=8, cmsg_level=1, cmsg_type=1)
    with pytest.raises(OSError) as caught:
        net.parse_control(bad)
    assert caught.value.errno == 22


def test_sockaddr_formatting() -> None:
    inet = net.SOCKADDR_IN.pack(
        sin_family=2, sin_port=(8080).to_bytes(2, "big"), sin_addr=bytes([127, 0, 0, 1])
    )
    assert net.format_sockaddr(inet) == (
        '{sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}'
    )
    abstract = (1).to_bytes(2, "little") + b"\0name"
    assert net.format_sockaddr(abstract) == '{sa_family=AF_UNIX, sun_path=@"name"}'
