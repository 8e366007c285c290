"""-netdev user's backend (libslirp through ctypes), driven with hand-built Ethernet frames: DHCP,
ARP, a guest's TCP connection reaching a host server through 10.0.2.2, and hostfwd reaching the
guest. No CPU: the frames a guest NIC would send are written here, byte by byte."""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
import time

import pytest

from qemuser.system.net import slirp

GUEST_MAC = bytes.fromhex("525400123456")
BROADCAST = b"\xff" * 6


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        1,
        0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    segment = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    pseudo = (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!BBH", 0, 17, len(segment))
    )
    segment = segment[:6] + struct.pack("!H", checksum(pseudo + segment) or 0xFFFF) + segment[8:]
    return ipv4(src, dst, 17, segment)


def tcp_syn(src: str, sport: int, dst: str, dport: int, seq: int) -> bytes:
    return tcp(src, sport, dst, dport, seq, 0, 0x02)


TCP_SYN, TCP_PSH, TCP_ACK = 0x02, 0x08, 0x10


def tcp(
    src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: int, data: bytes = b""
) -> bytes:
    segment = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
    pseudo = (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!BBH", 0, 6, len(segment))
    )
    segment = segment[:16] + struct.pack("!H", checksum(pseudo + segment)) + segment[18:]
    return ipv4(src, dst, 6, segment)


def ethernet(dst: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + GUEST_MAC + struct.pack("!H", ethertype) + payload


def dhcp(message_type: int, xid: int, requested: str | None = None) -> bytes:
    body = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1,
        1,
        6,
        0,
        xid,
        0,
        0x8000,
        *(b"\0" * 4,) * 4,
        GUEST_MAC.ljust(16, b"\0"),
        b"",
        b"",
    )
    options = b"\x63\x82\x53\x63" + bytes((53, 1, message_type))
    if requested:
        options += bytes((50, 4)) + ipaddress.IPv4Address(requested).packed
    options += bytes((55, 3, 1, 3, 6)) + b"\xff"
    return ethernet(BROADCAST, 0x0800, udp("0.0.0.0", 68, "255.255.255.255", 67, body + options))


def dhcp_options(frame: bytes) -> dict[int, bytes]:
    payload = frame[14 + 20 + 8 :]
    options, i = {}, 240
    while i < len(payload) and payload[i] != 0xFF:
        if payload[i] == 0:
            i += 1
            continue
        code, length = payload[i], payload[i + 1]
        options[code] = payload[i + 2 : i + 2 + length]
        i += 2 + length
    return options


class Wire:
    """The guest's end of the cable: frames the network sends, collected."""

    def __init__(self, config: slirp.UserNetConfig) -> None:
        self.frames: list[bytes] = []
        self.net = slirp.UserNetwork(config, self.frames.append)

    def wait_for(self, match, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in self.frames:
                if match(frame):
                    self.frames.remove(frame)
                    return frame
            self.net.poll_once(20)
        raise AssertionError(f"no matching frame in {len(self.frames)} received")

    def lease(self) -> bytes:
        self.net.send_to_network(dhcp(1, 0x1234))
        offer = self.wait_for(
            lambda f: f[12:14] == b"\x08\x00" and f[23] == 17 and f[36:38] == b"\x00\x44"
        )
        self.net.send_to_network(
            dhcp(3, 0x1234, requested=str(ipaddress.IPv4Address(offer[58:62])))
        )
        self.wait_for(lambda f: f[12:14] == b"\x08\x00" and dhcp_options(f).get(53) == b"\x05")
        return offer


@pytest.fixture
def wire():
    made: list[Wire] = []

    def make(**options) -> Wire:
        made.append(Wire(slirp.UserNetConfig(**options)))
        return made[-1]

    yield make
    for w in made:
        w.net.close()


def test_layouts_match_libslirp_h():
    # sizes and offsets printed by a C program against Debian's libslirp-dev 4.7 headers
    assert ctypes.sizeof(slirp.SlirpConfig) == 184
    assert slirp.SlirpConfig.vprefix_len.offset == 44
    assert slirp.SlirpConfig.vhostname.offset == 64
    assert slirp.SlirpConfig.vdhcp_start.offset == 96
    assert slirp.SlirpConfig.if_mtu.offset == 136
    assert slirp.SlirpConfig.disable_host_loopback.offset == 152
    assert slirp.SlirpConfig.outbound_addr.offset == 160
    assert slirp.SlirpConfig.disable_dns.offset == 176
    assert slirp.SlirpConfig.disable_dhcp.offset == 177
    assert ctypes.sizeof(slirp.SlirpCb) == 88
    assert slirp.SlirpCb.timer_new_opaque.offset == 80


def test_dhcp_gives_qemus_addresses(wire):
    offer = wire().lease()
    assert offer[:6] in (GUEST_MAC, BROADCAST)
    assert str(ipaddress.IPv4Address(offer[14 + 20 + 8 + 16 : 14 + 20 + 8 + 20])) == "10.0.2.15"
    options = dhcp_options(offer)
    assert options[53] == b"\x02"  # DHCPOFFER
    assert str(ipaddress.IPv4Address(options[3])) == "10.0.2.2"  # router
    assert str(ipaddress.IPv4Address(options[6])) == "10.0.2.3"  # DNS
    assert str(ipaddress.IPv4Address(options[1])) == "255.255.255.0"


def test_dhcp_follows_net_and_dhcpstart(wire):
    offer = wire(
        net=ipaddress.IPv4Network("192.168.76.0/24"),
        dhcp_start=ipaddress.IPv4Address("192.168.76.9"),
    ).lease()
    assert offer[58:62] == ipaddress.IPv4Address("192.168.76.9").packed
    assert dhcp_options(offer)[3] == ipaddress.IPv4Address("192.168.76.2").packed


def test_arp_for_the_gateway(wire):
    w = wire()
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        0x0800,
        6,
        4,
        1,
        GUEST_MAC,
        ipaddress.IPv4Address("10.0.2.15").packed,
        b"\0" * 6,
        ipaddress.IPv4Address("10.0.2.2").packed,
    )
    w.net.send_to_network(ethernet(BROADCAST, 0x0806, arp))
    reply = w.wait_for(lambda f: f[12:14] == b"\x08\x06")
    op, sender_mac, sender_ip = struct.unpack("!H6s4s", reply[14 + 6 : 14 + 18])
    assert op == 2
    assert sender_ip == ipaddress.IPv4Address("10.0.2.2").packed
    assert sender_mac == bytes.fromhex("52550a000202")  # libslirp's gateway MAC


def test_guest_connects_to_a_host_server_through_the_gateway(wire):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    port = server.getsockname()[1]
    w = wire()
    w.lease()
    w.net.send_to_network(
        ethernet(
            bytes.fromhex("52550a000202"),
            0x0800,
            tcp_syn("10.0.2.15", 40000, "10.0.2.2", port, 1000),
        )
    )
    # libslirp connects to the host's loopback for 10.0.2.2 and answers the guest's SYN
    for _ in range(50):
        w.net.poll_once(20)
        try:
            conn, _ = server.accept()
            break
        except TimeoutError:
            continue
    conn.close()
    server.close()
    synack = w.wait_for(
        lambda f: f[12:14] == b"\x08\x00" and f[23] == 6 and f[14 + 20 + 13] & 0x12 == 0x12
    )
    sport, dport, _seq, ack = struct.unpack("!HHII", synack[34:46])
    assert (sport, dport, ack) == (port, 40000, 1001)


def test_hostfwd_reaches_the_guest(wire):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    fwd = slirp.parse_hostfwd(f"tcp:127.0.0.1:{port}-:22")
    w = wire(hostfwd=(fwd,))
    w.lease()
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    syn = w.wait_for(lambda f: f[12:14] == b"\x08\x00" and f[23] == 6 and f[14 + 20 + 13] & 0x02)
    client.close()
    assert syn[:6] == GUEST_MAC
    assert syn[30:34] == ipaddress.IPv4Address("10.0.2.15").packed
    assert struct.unpack("!H", syn[36:38])[0] == 22


def test_hostfwd_port_in_use_is_refused(wire):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with pytest.raises(slirp.NetdevError, match="Could not set up host forwarding rule"):
            wire(hostfwd=(slirp.parse_hostfwd(f"tcp:127.0.0.1:{port}-:22"),))
    finally:
        busy.close()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tcp::2222-:22", (False, "0.0.0.0", 2222, None, 22)),
        ("udp:127.0.0.1:5353-10.0.2.20:53", (True, "127.0.0.1", 5353, "10.0.2.20", 53)),
        (":127.0.0.1:8080-:80", (False, "127.0.0.1", 8080, None, 80)),
    ],
)
def test_hostfwd_syntax(spec, expected):
    fwd = slirp.parse_hostfwd(spec)
    got = (
        fwd.udp,
        str(fwd.host_addr),
        fwd.host_port,
        None if fwd.guest_addr is None else str(fwd.guest_addr),
        fwd.guest_port,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("spec", "reason"),
    [  # QEMU 7.2's slirp_hostfwd reasons, field by field
        ("tcp2222", "No : separators"),
        ("sctp::1-:2", "Bad protocol name"),
        ("tcp:5555", "Missing : separator"),
        ("tcp:2222-:22", "Bad host address"),
        ("tcp::2222:22", "Bad host port separator"),
        ("tcp::x-:22", "Bad host port"),
        ("tcp::70000-:22", "Bad host port"),
        ("tcp::1-22", "Missing guest address"),
        ("tcp::1-10.0.2.300:22", "Bad guest address"),
        ("tcp::1-:0", "Bad guest port"),
    ],
)
def test_bad_hostfwd_is_refused(spec, reason):
    with pytest.raises(slirp.NetdevError) as caught:
        slirp.parse_hostfwd(spec)
    assert str(caught.value) == f"Invalid host forwarding rule '{spec}' ({reason})"


def test_user_options_as_qemu():
    config = slirp.parse_user_options(
        [
            ("id", "n0"),
            ("net", "10.9.0.0/16"),
            ("restrict", "on"),
            ("ipv6", "off"),
            ("hostfwd", "tcp::2222-:22"),
            ("hostfwd", "udp::5000-:5000"),
        ]
    )
    assert str(config.net) == "10.9.0.0/16" and config.restrict and not config.ipv6
    assert str(config.host_addr) == "10.9.0.2" and str(config.dhcp_first) == "10.9.0.15"
    assert [f.host_port for f in config.hostfwd] == [2222, 5000]
    with pytest.raises(slirp.NetdevError, match="Invalid parameter 'bogus'"):
        slirp.parse_user_options([("bogus", "1")])
    with pytest.raises(slirp.NetdevError, match="Parameter 'restrict' expects 'on' or 'off'"):
        slirp.parse_user_options([("restrict", "maybe")])
    with pytest.raises(slirp.NetdevError, match="not in the network"):
        slirp.parse_user_options([("host", "192.168.1.1")])


def tcp_payload(frame: bytes) -> bytes:
    """The data of an Ethernet/IPv4/TCP frame (IP header without options, as libslirp's)."""
    total_length = struct.unpack("!H", frame[16:18])[0]
    return frame[34 + (frame[46] >> 4) * 4 : 14 + total_length]


def test_guestfwd_to_a_tcp_chardev(wire):
    """guestfwd=tcp:10.0.2.100:1234-tcp:127.0.0.1:PORT: the chardev connects when the netdev is
    made (before any guest frame, as QEMU's); a guest connection to 10.0.2.100:1234 then
    carries bytes both ways through it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    port = server.getsockname()[1]
    w = wire(guestfwd=(slirp.parse_guestfwd(f"tcp:10.0.2.100:1234-tcp:127.0.0.1:{port}"),))
    conn, _ = server.accept()
    conn.settimeout(5)
    server.close()
    w.lease()
    gateway = bytes.fromhex("52550a000202")

    def from_forward(f: bytes) -> bool:
        return f[12:14] == b"\x08\x00" and f[23] == 6 and f[26:30] == bytes((10, 0, 2, 100))

    w.net.send_to_network(
        ethernet(gateway, 0x0800, tcp("10.0.2.15", 40001, "10.0.2.100", 1234, 5000, 0, TCP_SYN))
    )
    synack = w.wait_for(from_forward)
    sport, dport, server_seq, ack = struct.unpack("!HHII", synack[34:46])
    assert (sport, dport, ack, synack[47] & 0x12) == (1234, 40001, 5001, 0x12)
    w.net.send_to_network(
        ethernet(gateway, 0x0800, tcp("10.0.2.15", 40001, "10.0.2.100", 1234, 5001,
                                      server_seq + 1, TCP_PSH | TCP_ACK, b"hello from guest\n"))
    )  # fmt: skip
    received = b""
    for _ in range(50):
        w.net.poll_once(20)
        try:
            received += conn.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        if received.endswith(b"\n"):
            break
    assert received == b"hello from guest\n"
    conn.sendall(b"hello from host\n")
    reply = w.wait_for(lambda f: from_forward(f) and tcp_payload(f) != b"")
    assert tcp_payload(reply) == b"hello from host\n"
    conn.close()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tcp:10.0.2.100:1234-tcp:127.0.0.1:80", ("10.0.2.100", 1234, None, "tcp:127.0.0.1:80")),
        (":10.0.2.5:23-cmd:nc -N 127.0.0.1 9", ("10.0.2.5", 23, "nc -N 127.0.0.1 9", None)),
        ("tcp::99-unix:/tmp/s", (None, 99, None, "unix:/tmp/s")),
    ],
)
def test_guestfwd_syntax(spec, expected):
    fwd = slirp.parse_guestfwd(spec)
    addr = None if fwd.addr is None else str(fwd.addr)
    assert (addr, fwd.port, fwd.command, fwd.device) == expected
    assert fwd.label == f"guestfwd.tcp.{expected[1]}"


@pytest.mark.parametrize(
    "spec", ["udp:10.0.2.100:5-cmd:cat", "tcp:10.0.2.100:0-cmd:cat", "tcp:10.0.2.1:x-cmd:a",
             "tcp:10.0.2.100:99", "tcp:300.0.0.1:9-cmd:a"]
)  # fmt: skip
def test_bad_guestfwd_is_refused(spec):
    with pytest.raises(slirp.NetdevError, match=f"^Invalid guest forwarding rule '{spec}'$"):
        slirp.parse_guestfwd(spec)


def test_guestfwd_device_that_cannot_connect_gives_qemus_two_lines():
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()  # nothing listens there now
    fwd = slirp.parse_guestfwd(f"tcp:10.0.2.100:1234-tcp:127.0.0.1:{number}")
    with pytest.raises(slirp.NetdevError) as info:
        slirp.UserNetwork(slirp.UserNetConfig(guestfwd=(fwd,)), lambda frame: None)
    assert str(info.value) == (
        f"Failed to connect to '127.0.0.1:{number}': Connection refused\n"
        "Could not open guest forwarding device 'guestfwd.tcp.1234'"
    )
