"""Single-process sockets: TCP with a non-blocking connect and poll, UDP, UNIX socketpairs with
SCM_RIGHTS and SCM_CREDENTIALS, names, options and errors.

The expected lines are what the same source prints compiled natively for this host; IPv6 lines
depend on whether the host has ::1, which the test finds out the same way.
"""

from __future__ import annotations

import socket

import pytest

from tests.conftest import fixture_path, run_guest

BUILDS = [(arch, flavour) for arch in ("aarch64", "riscv64") for flavour in ("static", "dynamic")]

NET_SOCKETS_EXPECTED = """\
tcp server cloexec=1 nonblock=0
SO_REUSEADDR set=ok get=1
bind=ok listen=ok
getsockname=ok len=16 family=2 addr=127.0.0.1 port-set=1
SO_ACCEPTCONN=1 SO_TYPE=1 SO_DOMAIN=2 SO_PROTOCOL=6
client cloexec=0 nonblock=1
connect started=1
poll=1 revents=0x4 SO_ERROR=0
accept4=ok len=16 peer=127.0.0.1 port-matches=1 cloexec=1
getpeername=ok same-as-server=1
short getpeername len=16 family=2 port-matches=1 untouched=0xaaaaaaaa
TCP_NODELAY before=0 after=1
SO_LINGER len=8 onoff=1 linger=7
SO_RCVTIMEO len=16 sec=3 usec=500000
setsockopt short optlen=EINVAL
getsockopt bad level=EOPNOTSUPP
send=4 poll=1 peek=4 recv=4 data=ping
write=5 read=5 data=pong!
empty nonblocking recv=EAGAIN
shutdown=ok eof recv=0
send after SHUT_WR=EPIPE
connect refused=ECONNREFUSED
udp sendto=12
recvfrom=12 data=datagram-one from_len=16 from-b=1
MSG_TRUNC recv=10 data=0123
sendmsg=14 recvmsg=14 parts=scat|ter-gather namelen=16 from-b=1 flags=0
truncated recvmsg=5 data=a-lon flags=0x20
sendmmsg=2 lens=5,7
recvmmsg=2 lens=5,7 data=first,second!
recvmmsg empty=EAGAIN
SO_ATTACH_FILTER=ok filtered recv=EAGAIN SO_DETACH_FILTER=ok unfiltered recv=4 data=kept
recv with SO_RCVTIMEO=EAGAIN waited-enough=1
socketpair=ok
sendmsg SCM_RIGHTS=1
recvmsg=1 byte=x controllen=24 level=1 type=1 len=20 flags=0x40000000
passed fd cloexec=1 read=26 data=secret through a passed fd
short control recvmsg=1 controllen=0 ctrunc=1
SO_PASSCRED=1
credentials recvmsg=1 type=2 len=28 pid-ok=1 uid-ok=1 gid-ok=1
SO_PEERCRED len=12 pid-ok=1 uid-ok=1
abstract bind=ok listen=ok
abstract connect=ok
abstract getpeername len-ok=1 name-ok=1
accept without address=ok
path bind=ok exists=1
path sendto=10 recv=10 data=hello unix
path getsockname len-ok=1 same=1
socket bad type=EINVAL
socket bad family=EAFNOSUPPORT
getsockopt on a pipe=ENOTSOCK
getsockname bad pointer=EFAULT
bind long length=EINVAL
bind short length=EINVAL
connect bad pointer=EFAULT
accept on unlistened=EINVAL
send unconnected=EPIPE
bad fd=EBADF
recv without SA_RESTART=EINTR ticks>=1=1
recv with SA_RESTART=4 data=tick ticks>=3=1
"""


def expected_ipv6_lines() -> str:
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return "ipv6 socket=EAFNOSUPPORT\n"
    with probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            return "ipv6 socket=ok\nIPV6_V6ONLY before=0 after=1\nbind ::1=EADDRNOTAVAIL\n"
    return (
        "ipv6 socket=ok\nIPV6_V6ONLY before=0 after=1\nbind ::1=ok\n"
        "getsockname len=28 family=10 addr=::1 port-set=1\n"
    )


@pytest.mark.parametrize(("arch", "flavour"), BUILDS)
def test_sockets_in_one_process(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "net_sockets", flavour))
    assert result.stderr == b""
    assert result.stdout.decode() == NET_SOCKETS_EXPECTED + expected_ipv6_lines()
    assert result.returncode == 0


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
