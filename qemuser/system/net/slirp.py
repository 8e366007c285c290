"""`-netdev user`: QEMU's user-mode networking, through libslirp (the library QEMU itself uses).

libslirp is a TCP/IP stack that turns a guest's Ethernet frames into host sockets: the guest
sees a 10.0.2.0/24 network with a gateway (10.0.2.2, also the host), a DNS server (10.0.2.3) and
a DHCP server handing out 10.0.2.15 onwards, and its connections leave through ordinary host
sockets. We bind it with ctypes (Debian's libslirp0) rather than writing a stack by hand.

Threading: libslirp is not thread-safe. One host thread (`UserNetwork.start`) polls its sockets
and runs its timers; the machine's thread hands it guest frames through `send_to_network`; both
hold `self.lock` around every libslirp call. Frames for the guest are handed to the `deliver`
callback from inside those calls (either thread), so a NIC model must only queue them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from qemuser.system.chardev.backends import Chardev
from qemuser.system.chardev.sockets import ChardevError
from qemuser.system.chardev.spec import open_chardev, parse_legacy

# Debian package that provides the library, named in the error when it is missing.
LIBSLIRP_PACKAGE = "libslirp0"


class NetdevError(Exception):
    """A -netdev user option that cannot be used; the message is QEMU's wording."""


# --- the C interface (libslirp.h of libslirp 4.7, SlirpConfig version 4) -------------------


class InAddr(ctypes.Structure):
    """struct in_addr: the address in network byte order."""

    _fields_ = [("s_addr", ctypes.c_uint32)]


class In6Addr(ctypes.Structure):
    """struct in6_addr: 16 bytes, 4-byte aligned (a union with uint32_t s6_addr32[4] in C)."""

    _fields_ = [("s6_addr32", ctypes.c_uint32 * 4)]

    @classmethod
    def of(cls, address: ipaddress.IPv6Address) -> In6Addr:
        return cls.from_buffer_copy(address.packed)


class SlirpConfig(ctypes.Structure):
    """SlirpConfig (libslirp.h); 184 bytes on x86_64, checked by a unit test."""

    _fields_ = [
        ("version", ctypes.c_uint32),
        ("restricted", ctypes.c_int),
        ("in_enabled", ctypes.c_bool),
        ("vnetwork", InAddr),
        ("vnetmask", InAddr),
        ("vhost", InAddr),
        ("in6_enabled", ctypes.c_bool),
        ("vprefix_addr6", In6Addr),
        ("vprefix_len", ctypes.c_uint8),
        ("vhost6", In6Addr),
        ("vhostname", ctypes.c_char_p),
        ("tftp_server_name", ctypes.c_char_p),
        ("tftp_path", ctypes.c_char_p),
        ("bootfile", ctypes.c_char_p),
        ("vdhcp_start", InAddr),
        ("vnameserver", InAddr),
        ("vnameserver6", In6Addr),
        ("vdnssearch", ctypes.POINTER(ctypes.c_char_p)),
        ("vdomainname", ctypes.c_char_p),
        ("if_mtu", ctypes.c_size_t),
        ("if_mru", ctypes.c_size_t),
        ("disable_host_loopback", ctypes.c_bool),
        ("enable_emu", ctypes.c_bool),
        ("outbound_addr", ctypes.c_void_p),
        ("outbound_addr6", ctypes.c_void_p),
        ("disable_dns", ctypes.c_bool),
        ("disable_dhcp", ctypes.c_bool),
    ]


SLIRP_CONFIG_VERSION = 4
SLIRP_POLL_IN, SLIRP_POLL_OUT, SLIRP_POLL_PRI, SLIRP_POLL_ERR, SLIRP_POLL_HUP = 1, 2, 4, 8, 16

SendPacketCb = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
GuestErrorCb = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)
ClockGetNsCb = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)
TimerNewCb = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
TimerFreeCb = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
TimerModCb = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p)
PollFdCb = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)
NotifyCb = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
InitCompletedCb = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
TimerNewOpaqueCb = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
AddPollCb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
GetREventsCb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
WriteCb = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)


class SlirpCb(ctypes.Structure):
    """SlirpCb (libslirp.h); 88 bytes on x86_64."""

    _fields_ = [
        ("send_packet", SendPacketCb),
        ("guest_error", GuestErrorCb),
        ("clock_get_ns", ClockGetNsCb),
        ("timer_new", TimerNewCb),
        ("timer_free", TimerFreeCb),
        ("timer_mod", TimerModCb),
        ("register_poll_fd", PollFdCb),
        ("unregister_poll_fd", PollFdCb),
        ("notify", NotifyCb),
        ("init_completed", InitCompletedCb),
        ("timer_new_opaque", TimerNewOpaqueCb),
    ]


_LIB: ctypes.CDLL | None = None


def libslirp() -> ctypes.CDLL:
    """The library, loaded on first use; a missing one is a NetdevError naming the package."""
    global _LIB
    if _LIB is None:
        name = ctypes.util.find_library("slirp") or "libslirp.so.0"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise NetdevError(
                f"-netdev user needs libslirp (Debian package {LIBSLIRP_PACKAGE}): {exc}"
            ) from None
        lib.slirp_new.restype = ctypes.c_void_p
        lib.slirp_new.argtypes = [
            ctypes.POINTER(SlirpConfig),
            ctypes.POINTER(SlirpCb),
            ctypes.c_void_p,
        ]
        lib.slirp_cleanup.argtypes = [ctypes.c_void_p]
        lib.slirp_input.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.slirp_pollfds_fill.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_uint32),
            AddPollCb,
            ctypes.c_void_p,
        ]
        lib.slirp_pollfds_poll.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            GetREventsCb,
            ctypes.c_void_p,
        ]
        lib.slirp_handle_timer.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.slirp_add_hostfwd.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            InAddr,
            ctypes.c_int,
            InAddr,
            ctypes.c_int,
        ]
        lib.slirp_remove_hostfwd.argtypes = [ctypes.c_void_p, ctypes.c_int, InAddr, ctypes.c_int]
        lib.slirp_add_exec.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.POINTER(InAddr),
            ctypes.c_int,
        ]
        lib.slirp_add_guestfwd.argtypes = [
            ctypes.c_void_p,
            WriteCb,
            ctypes.c_void_p,
            ctypes.POINTER(InAddr),
            ctypes.c_int,
        ]
        lib.slirp_socket_recv.restype = None
        lib.slirp_socket_recv.argtypes = [
            ctypes.c_void_p,
            InAddr,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.slirp_socket_can_recv.restype = ctypes.c_size_t
        lib.slirp_socket_can_recv.argtypes = [ctypes.c_void_p, InAddr, ctypes.c_int]
        lib.slirp_connection_info.restype = ctypes.c_void_p
        lib.slirp_connection_info.argtypes = [ctypes.c_void_p]
        lib.slirp_version_string.restype = ctypes.c_char_p
        _LIB = lib
    return _LIB


def in_addr(address: ipaddress.IPv4Address) -> InAddr:
    return InAddr(int.from_bytes(address.packed, "little"))


# --- QEMU's options ------------------------------------------------------------------------


@dataclass(frozen=True)
class HostForward:
    """hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport"""

    udp: bool
    host_addr: ipaddress.IPv4Address
    host_port: int
    guest_addr: ipaddress.IPv4Address | None  # None: the first DHCP address
    guest_port: int
    rule: str = ""  # the option's text, as QEMU's errors quote it


@dataclass(frozen=True)
class GuestForward:
    """guestfwd=[tcp]:[server]:port-cmd:command or -DEV: a connection from the guest to
    server:port is handed to a command's stdin/stdout (one process per connection), or to a
    character device DEV in the legacy chardev syntax (tcp:HOST:PORT, unix:PATH, file:PATH...),
    opened once when the netdev is made and shared by every guest connection, as QEMU does."""

    addr: ipaddress.IPv4Address | None  # None: libslirp's default, net + 4 (10.0.2.4)
    port: int
    command: str | None = None
    device: str | None = None
    rule: str = ""  # the option's text, as QEMU's errors quote it

    @property
    def label(self) -> str:
        """The chardev's id, QEMU's name for it (its errors say it)."""
        return f"guestfwd.tcp.{self.port}"


@dataclass(frozen=True)
class UserNetConfig:
    """The options of `-netdev user,...` (QEMU's net/slirp.c defaults)."""

    net: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.2.0/24")
    host: ipaddress.IPv4Address | None = None  # default: net + 2
    dns: ipaddress.IPv4Address | None = None  # default: net + 3
    dhcp_start: ipaddress.IPv4Address | None = None  # default: net + 15
    restrict: bool = False
    ipv4: bool = True
    ipv6: bool = True
    hostname: str | None = None
    domainname: str | None = None
    tftp: str | None = None
    bootfile: str | None = None
    hostfwd: tuple[HostForward, ...] = ()
    guestfwd: tuple[GuestForward, ...] = ()

    @property
    def host_addr(self) -> ipaddress.IPv4Address:
        return self.host or self.net.network_address + 2

    @property
    def dns_addr(self) -> ipaddress.IPv4Address:
        return self.dns or self.net.network_address + 3

    @property
    def dhcp_first(self) -> ipaddress.IPv4Address:
        return self.dhcp_start or self.net.network_address + 15


BOOL_WORDS = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}
# Options of QEMU's `-netdev user` that this backend takes; QEMU's others are refused by name.
USER_OPTIONS = (
    "id",
    "net",
    "host",
    "dns",
    "dhcpstart",
    "restrict",
    "restricted",
    "ipv4",
    "ipv6",
    "hostname",
    "domainname",
    "tftp",
    "bootfile",
    "hostfwd",
    "guestfwd",
)


def _bool(name: str, value: str) -> bool:
    try:
        return BOOL_WORDS[value]
    except KeyError:
        raise NetdevError(f"Parameter '{name}' expects 'on' or 'off'") from None


def _ipv4(name: str, value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise NetdevError(f"Parameter '{name}' expects an IPv4 address") from None


def parse_net(value: str) -> ipaddress.IPv4Network:
    """net=addr[/mask]: a prefix length or a dotted mask, as QEMU takes them."""
    try:
        if "/" not in value:
            return ipaddress.IPv4Network(f"{value}/24", strict=False)
        return ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise NetdevError(f"Invalid net address '{value}'") from None


def _strtol(text: str) -> int | None:
    """C's strtol with base 0 over the whole text (None when something is left over)."""
    if not text:
        return 0  # strtol reads nothing and leaves nothing: QEMU takes it as 0
    try:
        return int(text, 0)
    except ValueError:
        return None


def parse_hostfwd(spec: str) -> HostForward:
    """[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport, read field by field as QEMU's
    slirp_hostfwd does, with its reason for the first field that is wrong."""

    def bad(reason: str) -> NetdevError:
        return NetdevError(f"Invalid host forwarding rule '{spec}' ({reason})")

    proto, sep, rest = spec.partition(":")
    if not sep:
        raise bad("No : separators")
    if proto not in ("", "tcp", "udp"):
        raise bad("Bad protocol name")
    host_text, sep, rest = rest.partition(":")
    if not sep:
        raise bad("Missing : separator")
    try:
        host_addr = ipaddress.IPv4Address(host_text or "0.0.0.0")
    except ValueError:
        raise bad("Bad host address") from None
    host_port_text, sep, rest = rest.partition("-")
    if not sep:
        raise bad("Bad host port separator")
    host_port = _strtol(host_port_text)
    if host_port is None or not 0 <= host_port <= 65535:
        raise bad("Bad host port")
    guest_text, sep, guest_port_text = rest.partition(":")
    if not sep:
        raise bad("Missing guest address")
    try:
        guest_addr = ipaddress.IPv4Address(guest_text) if guest_text else None
    except ValueError:
        raise bad("Bad guest address") from None
    guest_port = _strtol(guest_port_text)
    if guest_port is None or not 1 <= guest_port <= 65535:
        raise bad("Bad guest port")
    return HostForward(proto == "udp", host_addr, host_port, guest_addr, guest_port, spec)


def parse_guestfwd(spec: str) -> GuestForward:
    """[tcp]:[server]:port-cmd:command or -DEV (QEMU's slirp_guestfwd)."""
    bad = NetdevError(f"Invalid guest forwarding rule '{spec}'")
    proto, sep, rest = spec.partition(":")
    if not sep or proto not in ("", "tcp"):
        raise bad
    server, sep, rest = rest.partition(":")
    port_text, sep2, device = rest.partition("-")
    if not sep or not sep2 or not port_text.isdigit():
        raise bad
    try:
        addr = ipaddress.IPv4Address(server) if server else None
    except ValueError:
        raise bad from None
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise bad
    if device.startswith("cmd:"):
        return GuestForward(addr, port, command=device[4:], rule=spec)
    return GuestForward(addr, port, device=device, rule=spec)


def parse_user_options(options: list[tuple[str, str]]) -> UserNetConfig:
    """`-netdev user,...` options (name, value) in command-line order; hostfwd/guestfwd repeat."""
    values: dict[str, object] = {}
    hostfwd: list[HostForward] = []
    guestfwd: list[GuestForward] = []
    for name, value in options:
        if name not in USER_OPTIONS:
            raise NetdevError(f"Invalid parameter '{name}'")
        if name == "id":
            continue
        if name == "net":
            values["net"] = parse_net(value)
        elif name in ("host", "dns", "dhcpstart"):
            values[{"dhcpstart": "dhcp_start"}.get(name, name)] = _ipv4(name, value)
        elif name in ("restrict", "restricted", "ipv4", "ipv6"):
            values["restrict" if name == "restricted" else name] = _bool(name, value)
        elif name == "hostfwd":
            hostfwd.append(parse_hostfwd(value))
        elif name == "guestfwd":
            guestfwd.append(parse_guestfwd(value))
        else:
            values[name] = value
    config = UserNetConfig(**values, hostfwd=tuple(hostfwd), guestfwd=tuple(guestfwd))  # type: ignore[arg-type]
    if not config.ipv4 and not config.ipv6:
        raise NetdevError("IPv4 and IPv6 disabled simultaneously")
    for addr, what in (
        (config.host_addr, "host"),
        (config.dns_addr, "DNS"),
        (config.dhcp_first, "DHCP"),
    ):
        if addr not in config.net:
            raise NetdevError(
                f"Failed to configure {what} address: not in the network {config.net}"
            )
    return config


# --- the running stack ---------------------------------------------------------------------


@dataclass
class _Timer:
    timer_id: int
    cb_opaque: int | None
    expire_ms: int | None = None


@dataclass
class UserNetwork:
    """One `-netdev user` instance: guest frames in through `send_to_network`, frames for the
    guest out through `deliver`."""

    config: UserNetConfig
    deliver: Callable[[bytes], None]
    lock: threading.RLock = field(default_factory=threading.RLock)
    guest_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        lib = libslirp()
        self._lib = lib
        self._timers: dict[int, _Timer] = {}
        self._next_timer = 1
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._keep: list[object] = []  # C strings and callbacks libslirp holds pointers to
        self._chardev_forwards: list[_ChardevForward] = []
        self._callbacks = SlirpCb(
            send_packet=SendPacketCb(self._send_packet),
            guest_error=GuestErrorCb(self._guest_error),
            clock_get_ns=ClockGetNsCb(lambda _opaque: time.monotonic_ns()),
            timer_new=TimerNewCb(lambda _cb, _cb_opaque, _opaque: None),  # superseded by v4's
            timer_free=TimerFreeCb(self._timer_free),
            timer_mod=TimerModCb(self._timer_mod),
            register_poll_fd=PollFdCb(lambda _fd, _opaque: None),
            unregister_poll_fd=PollFdCb(lambda _fd, _opaque: None),
            notify=NotifyCb(lambda _opaque: self._wake()),
            init_completed=InitCompletedCb(lambda _slirp, _opaque: None),
            timer_new_opaque=TimerNewOpaqueCb(self._timer_new_opaque),
        )
        self._slirp = lib.slirp_new(
            ctypes.byref(self._slirp_config()), ctypes.byref(self._callbacks), None
        )
        if not self._slirp:
            raise NetdevError("Failed to initialize libslirp")
        try:
            self._add_forwards()
        except NetdevError:
            self.close()
            raise

    def _c_string(self, text: str | None) -> bytes | None:
        if text is None:
            return None
        data = text.encode()
        self._keep.append(data)
        return data

    def _slirp_config(self) -> SlirpConfig:
        cfg = self.config
        c = SlirpConfig()
        c.version = SLIRP_CONFIG_VERSION
        c.restricted = int(cfg.restrict)
        c.in_enabled = cfg.ipv4
        c.vnetwork = in_addr(cfg.net.network_address)
        c.vnetmask = in_addr(cfg.net.netmask)
        c.vhost = in_addr(cfg.host_addr)
        c.in6_enabled = cfg.ipv6
        # QEMU's IPv6 defaults: fec0::/64, the host at fec0::2, DNS at fec0::3.
        prefix = ipaddress.IPv6Address("fec0::")
        c.vprefix_addr6 = In6Addr.of(prefix)
        c.vprefix_len = 64
        c.vhost6 = In6Addr.of(prefix + 2)
        c.vnameserver6 = In6Addr.of(prefix + 3)
        c.vhostname = self._c_string(cfg.hostname)
        c.tftp_server_name = None
        c.tftp_path = self._c_string(cfg.tftp)
        c.bootfile = self._c_string(cfg.bootfile)
        c.vdhcp_start = in_addr(cfg.dhcp_first)
        c.vnameserver = in_addr(cfg.dns_addr)
        c.vdomainname = self._c_string(cfg.domainname)
        c.if_mtu = 0  # libslirp's defaults (1500)
        c.if_mru = 0
        return c

    def _add_forwards(self) -> None:
        for fwd in self.config.hostfwd:
            self._add_hostfwd(fwd)
        for gfwd in self.config.guestfwd:
            self._add_guestfwd(gfwd)

    def _add_hostfwd(self, fwd: HostForward) -> None:
        guest = fwd.guest_addr or self.config.dhcp_first
        status = self._lib.slirp_add_hostfwd(
            self._slirp,
            int(fwd.udp),
            in_addr(fwd.host_addr),
            fwd.host_port,
            in_addr(guest),
            fwd.guest_port,
        )
        if status < 0:
            raise NetdevError(f"Could not set up host forwarding rule '{fwd.rule}'")

    def _add_guestfwd(self, gfwd: GuestForward) -> None:
        # 0.0.0.0 asks libslirp for its default address, which it writes back into `addr`
        addr = in_addr(gfwd.addr or ipaddress.IPv4Address(0))
        conflict = NetdevError(
            f"Conflicting/invalid host:port in guest forwarding rule '{gfwd.rule}'"
        )
        if gfwd.command is not None:
            target = self._c_string(gfwd.command)
            if self._lib.slirp_add_exec(self._slirp, target, ctypes.byref(addr), gfwd.port) < 0:
                raise conflict
            return
        chardev = _open_guestfwd_device(gfwd)
        forward = _ChardevForward(chardev, addr, gfwd.port)
        write = WriteCb(forward.from_guest)
        self._keep.append(write)
        status = self._lib.slirp_add_guestfwd(
            self._slirp, write, None, ctypes.byref(addr), gfwd.port
        )
        if status < 0:
            chardev.close()
            raise conflict
        forward.addr = InAddr(addr.s_addr)
        self._chardev_forwards.append(forward)

    def _push_to_guest(self, forward: _ChardevForward) -> None:
        """What the chardev sent, handed to the guest's connection as far as its window allows
        (QEMU's guestfwd_can_read / guestfwd_read). Under self.lock."""
        if not forward.pending:
            forward.pending += forward.chardev.read()
        while forward.pending:
            room = self._lib.slirp_socket_can_recv(self._slirp, forward.addr, forward.port)
            if room <= 0:
                return  # no guest connection yet, or its window is full: keep the bytes
            chunk = bytes(forward.pending[:room])
            del forward.pending[: len(chunk)]
            self._lib.slirp_socket_recv(self._slirp, forward.addr, forward.port, chunk, len(chunk))

    # callbacks from libslirp (always under self.lock: libslirp only calls back from our calls)
    def _send_packet(self, buf: int, length: int, _opaque: int) -> int:
        self.deliver(ctypes.string_at(buf, length))
        return length

    def _guest_error(self, msg: bytes, _opaque: int) -> None:
        self.guest_errors.append(msg.decode(errors="replace"))

    def _timer_new_opaque(self, timer_id: int, cb_opaque: int | None, _opaque: int) -> int:
        handle = self._next_timer
        self._next_timer += 1
        self._timers[handle] = _Timer(timer_id, cb_opaque)
        return handle

    def _timer_free(self, handle: int, _opaque: int) -> None:
        self._timers.pop(handle, None)

    def _timer_mod(self, handle: int, expire_ms: int, _opaque: int) -> None:
        timer = self._timers.get(handle)
        if timer is not None:
            timer.expire_ms = expire_ms
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # a wake-up is already pending

    # the machine's side
    def send_to_network(self, frame: bytes) -> None:
        """A frame the guest sent."""
        with self.lock:
            self._lib.slirp_input(self._slirp, frame, len(frame))
        self._wake()

    def add_hostfwd(self, fwd: HostForward) -> None:
        """A rule added while the machine runs (HMP hostfwd_add)."""
        with self.lock:
            self._add_hostfwd(fwd)

    def remove_hostfwd(self, udp: bool, host_addr: ipaddress.IPv4Address, host_port: int) -> bool:
        """HMP hostfwd_remove; False when no such rule exists."""
        with self.lock:
            status = self._lib.slirp_remove_hostfwd(
                self._slirp, int(udp), in_addr(host_addr), host_port
            )
        return status >= 0

    def connection_info(self) -> str:
        """libslirp's own table of connections (HMP `info usernet`)."""
        with self.lock:
            pointer = self._lib.slirp_connection_info(self._slirp)
        if not pointer:
            return ""
        text = ctypes.string_at(pointer).decode(errors="replace")
        from qemuser.host.libc import LIBC  # the one binding of the host's libc

        LIBC.free(ctypes.c_void_p(pointer))
        return text

    def poll_once(self, max_wait_ms: int = 1000) -> None:
        """One round of the event loop: wait for libslirp's sockets (or a wake-up, or the next
        timer) and let it handle what happened."""
        fds: list[tuple[int, int]] = []

        def add_poll(fd: int, events: int, _opaque: int) -> int:
            fds.append((fd, events))
            return len(fds) - 1

        timeout = ctypes.c_uint32(max_wait_ms)
        with self.lock:
            self._lib.slirp_pollfds_fill(
                self._slirp, ctypes.byref(timeout), AddPollCb(add_poll), None
            )
            now_ms = time.monotonic_ns() // 1_000_000
            wait_ms = timeout.value
            for timer in self._timers.values():
                if timer.expire_ms is not None:
                    wait_ms = max(0, min(wait_ms, timer.expire_ms - now_ms))
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        for fd, events in fds:
            poller.register(fd, _to_poll(events))
        for forward in self._chardev_forwards:
            for fd in forward.chardev.wait_fds():
                poller.register(fd, select.POLLIN)
        ready = dict(poller.poll(wait_ms))
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass

        def get_revents(idx: int, _opaque: int) -> int:
            if 0 <= idx < len(fds):
                return _from_poll(ready.get(fds[idx][0], 0))
            return 0

        with self.lock:
            self._lib.slirp_pollfds_poll(self._slirp, 0, GetREventsCb(get_revents), None)
            now_ms = time.monotonic_ns() // 1_000_000
            for timer in list(self._timers.values()):
                if timer.expire_ms is not None and timer.expire_ms <= now_ms:
                    timer.expire_ms = None
                    self._lib.slirp_handle_timer(self._slirp, timer.timer_id, timer.cb_opaque)
            for forward in self._chardev_forwards:
                self._push_to_guest(forward)

    def start(self) -> None:
        """Runs the event loop on a host thread until `close`."""

        def loop() -> None:
            while not self._stop.is_set():
                self.poll_once(100)

        self._thread = threading.Thread(target=loop, name="slirp", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._stop.is_set():
            return  # closed already (netdev_del, then the machine's end)
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self.lock:
            if self._slirp:
                self._lib.slirp_cleanup(self._slirp)
                self._slirp = None
            for forward in self._chardev_forwards:
                forward.chardev.close()
            self._chardev_forwards.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass
class _ChardevForward:
    """One guestfwd to a character device: the guest's bytes go to `chardev`, the chardev's
    wait in `pending` until the guest's connection can take them."""

    chardev: Chardev
    addr: InAddr
    port: int
    pending: bytearray = field(default_factory=bytearray)

    def from_guest(self, buf: int, length: int, _opaque: int) -> int:
        # libslirp calls this from inside our calls (under the network's lock); the write
        # blocks until the chardev took it all, as QEMU's qemu_chr_fe_write_all does
        self.chardev.write(ctypes.string_at(buf, length))
        return length


def _open_guestfwd_device(gfwd: GuestForward) -> Chardev:
    """The chardev of a guestfwd rule, connected now; QEMU's two lines when it cannot be."""
    failed = f"Could not open guest forwarding device '{gfwd.label}'"
    try:
        spec = parse_legacy(gfwd.device or "", gfwd.label)
        if isinstance(spec, str):  # chardev:ID or none: no device of its own to open
            raise ChardevError(f"'{gfwd.device}' is not a valid char driver")
        return open_chardev(spec)
    except ChardevError as exc:
        raise NetdevError(f"{exc}\n{failed}") from None


def _to_poll(events: int) -> int:
    mask = 0
    if events & SLIRP_POLL_IN:
        mask |= select.POLLIN
    if events & SLIRP_POLL_OUT:
        mask |= select.POLLOUT
    if events & SLIRP_POLL_PRI:
        mask |= select.POLLPRI
    return mask


def _from_poll(revents: int) -> int:
    flags = 0
    if revents & select.POLLIN:
        flags |= SLIRP_POLL_IN
    if revents & select.POLLOUT:
        flags |= SLIRP_POLL_OUT
    if revents & select.POLLPRI:
        flags |= SLIRP_POLL_PRI
    if revents & (select.POLLERR | select.POLLNVAL):
        flags |= SLIRP_POLL_ERR
    if revents & select.POLLHUP:
        flags |= SLIRP_POLL_HUP
    return flags


def version() -> str:
    return libslirp().slirp_version_string().decode()


__all__ = [
    "GuestForward",
    "HostForward",
    "NetdevError",
    "UserNetConfig",
    "UserNetwork",
    "parse_hostfwd",
    "parse_user_options",
    "version",
]
