"""The machine's network clients as the monitor sees them (QEMU's net_clients list): backends
and NICs in the order they were made, the -net hub, and what HMP/QMP change while the machine
runs (hostfwd_add/hostfwd_remove, netdev_add/netdev_del). Replies are QEMU 7.2's words.

Monitors call this from their own threads; `lock` keeps the lists consistent. A backend
made by netdev_add has no NIC (qemuser has no device hotplug), so it runs unused, as QEMU's
does until a device_add names it; it ends with the process.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field

from qemuser.system.net.backend import NetBackend, UserBackend
from qemuser.system.net.netdev import HubPort, NetworkPlan, add_netdev
from qemuser.system.net.slirp import NetdevError, parse_hostfwd
from qemuser.system.qemuopts import split_options
from qemuser.system.virtio.net import VirtioNet


class NetClientError(Exception):
    """A monitor request that failed; the message is QEMU's."""


class DuplicateNetdev(NetClientError):
    """netdev_add of an id in use: QEMU finds it while parsing the arguments, so HMP words
    it as a command-line error (the program's name, then a hint)."""


@dataclass
class Nic:
    """A NIC as `info network` names it: its -device id, else MODEL.N (N counts that model)."""

    name: str
    model: str
    device: VirtioNet

    def info(self) -> str:
        mac = ":".join(f"{b:02x}" for b in self.device.mac)
        return f"{self.name}: index=0,type=nic,model={self.model},macaddr={mac}"


def nics_of(devices: list[tuple[str, object]]) -> list[Nic]:
    """The NICs among a DevicePlan's (option text, device) pairs, in plug order."""
    nics: list[Nic] = []
    for text, device in devices:
        inner = getattr(device, "virtio", device)  # a virtio-*-pci proxy's device
        if not isinstance(inner, VirtioNet):
            continue
        model = str(getattr(device, "model", inner.model))
        given = dict(split_options(text)).get("id")
        index = sum(nic.model == model for nic in nics)
        nics.append(Nic(given or f"{model}.{index}", model, inner))
    return nics


@dataclass
class NetClients:
    """The network clients of one machine, as the monitors list and change them."""

    backends: dict[str, NetBackend]  # by id, in creation order (netdev_add appends)
    nics: list[Nic]
    hub: list[HubPort] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)  # netdev_del'd while a NIC holds them
    added: set[str] = field(default_factory=set)  # made by netdev_add, after the NICs
    lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def of(cls, plan: NetworkPlan, devices: list[tuple[str, object]]) -> NetClients:
        return cls(dict(plan.backends), nics_of(devices), list(plan.hub))

    # --- info network --------------------------------------------------------------------
    def _nic_holding(self, netdev_id: str) -> Nic | None:
        backend = self.backends.get(netdev_id)
        for nic in self.nics:
            if backend is not None and nic.device.backend is backend:
                return nic
        return None

    def info_network(self) -> str:
        """QEMU's hmp_info_network: the hub's ports (newest first), then every client not on
        the hub in creation order: a NIC with its backend under it, a lonely backend alone
        (the command line's backends are made before the NICs, netdev_add's after)."""
        with self.lock:
            out: list[str] = []
            on_hub: set[int] = set()  # id() of the backends and NIC devices shown there
            if self.hub:
                out.append("hub 0\n")
            for port in reversed(self.hub):
                line = ""
                if port.nic is not None:
                    nic = self._nic_holding(port.nic.netdev)
                    if nic is not None:
                        line = nic.info()
                        on_hub.add(id(nic.device))
                elif port.netdev is not None:
                    line = self.backends[port.netdev].info()
                    on_hub.add(id(self.backends[port.netdev]))
                out.append(f" \\ {port.name}: {line}\n" if line else f" \\ {port.name}\n")
            held = {id(nic.device.backend) for nic in self.nics}
            lonely = [
                (name, backend)
                for name, backend in self.backends.items()
                if id(backend) not in on_hub and id(backend) not in held
            ]
            out += [b.info() + "\n" for name, b in lonely if name not in self.added]
            for nic in self.nics:
                if id(nic.device) in on_hub:
                    continue
                out.append(nic.info() + "\n")
                peer = next((b for b in self.backends.values() if b is nic.device.backend), None)
                if peer is not None:
                    out.append(f" \\ {peer.info()}\n")
            out += [b.info() + "\n" for name, b in lonely if name in self.added]
            return "".join(out)

    def info_usernet(self) -> str:
        """QEMU's hmp_info_usernet: each user backend's hub (-1: none) and libslirp's table."""
        with self.lock:
            out = []
            hub_ids = {port.netdev for port in self.hub}
            for name, backend in self.backends.items():
                if isinstance(backend, UserBackend) and name not in self.deleted:
                    hub = 0 if name in hub_ids else -1
                    out.append(f"Hub {hub} ({name}):\n{backend.network.connection_info()}")
            return "".join(out)

    # --- hostfwd_add / hostfwd_remove ------------------------------------------------------
    def _slirp_lookup(self, netdev_id: str | None) -> UserBackend:
        """QEMU's slirp_lookup: the named user netdev, or the first one."""
        if netdev_id is not None:
            backend = self.backends.get(netdev_id)
            if backend is None or netdev_id in self.deleted:
                raise NetClientError(f"unrecognized netdev id '{netdev_id}'")
            if not isinstance(backend, UserBackend):
                raise NetClientError(f"invalid netdev id '{netdev_id}'")
            return backend
        for name, backend in self.backends.items():
            if isinstance(backend, UserBackend) and name not in self.deleted:
                return backend
        raise NetClientError("user mode network stack not in use")

    def hostfwd_add(self, netdev_id: str | None, rule: str) -> str:
        with self.lock:
            backend = self._slirp_lookup(netdev_id)
            try:
                backend.network.add_hostfwd(parse_hostfwd(rule))
            except NetdevError as exc:
                raise NetClientError(str(exc)) from None
        return ""

    def hostfwd_remove(self, netdev_id: str | None, rule: str) -> str:
        with self.lock:
            backend = self._slirp_lookup(netdev_id)
            # [tcp|udp]:[hostaddr]:hostport, as QEMU's hmp_hostfwd_remove reads it
            proto, sep, rest = rule.partition(":")
            host, sep2, port_text = rest.partition(":")
            if not sep or not sep2 or proto not in ("", "tcp", "udp"):
                return "invalid format\n"
            try:
                host_addr = ipaddress.IPv4Address(host or "0.0.0.0")
                host_port = int(port_text, 10)
            except ValueError:
                return "invalid format\n"
            found = backend.network.remove_hostfwd(proto == "udp", host_addr, host_port)
        return f"host forwarding rule for {rule} {'removed' if found else 'not found'}\n"

    # --- netdev_add / netdev_del -----------------------------------------------------------
    def netdev_add(self, text: str) -> None:
        """A backend from `-netdev` syntax (HMP) or QMP's arguments turned into it."""
        with self.lock:
            plan = NetworkPlan(backends=dict(self.backends))
            netdev_id = dict(split_options(text) if text else []).get("id")
            if not netdev_id:
                raise NetClientError("Parameter 'id' is missing")  # QEMU checks it first
            if netdev_id in self.backends:
                raise DuplicateNetdev(f"Duplicate ID '{netdev_id}' for netdev")
            try:
                add_netdev(plan, text)
            except NetdevError as exc:
                # the command line's "-netdev TEXT: " prefix is not the monitor's
                raise NetClientError(str(exc).removeprefix(f"-netdev {text}: ")) from None
            for name, backend in plan.backends.items():
                if name not in self.backends:
                    self.backends[name] = backend
                    self.added.add(name)
                    backend.start(lambda frame: None)  # no NIC: frames for the guest drop

    def netdev_del(self, netdev_id: str) -> None:
        """QEMU deletes a lonely backend; one a NIC holds stays listed with it, closed, and the
        NIC's link goes down (QEMU's peer_deleted), so the NIC sends it nothing more."""
        with self.lock:
            backend = self.backends.get(netdev_id)
            if backend is None or netdev_id in self.deleted:
                raise NetClientError(f"Device '{netdev_id}' not found")
            holders = [nic for nic in self.nics if nic.device.backend is backend]
            for nic in holders:
                _link_down(nic.device)
            if holders or any(port.netdev == netdev_id for port in self.hub):
                self.deleted.add(netdev_id)
            else:
                del self.backends[netdev_id]
            backend.close()


def _link_down(device: VirtioNet) -> None:
    """The NIC stops sending at once (it checks before every frame); the driver is told on
    the machine's thread, the only one that may raise its interrupt."""
    device.link_up = False
    transport = device.transport
    post = getattr(transport.host, "post_io", None) if transport is not None else None
    if post is not None:
        post(lambda: device.set_link(False))


# QMP's netdev_add takes the Netdev union of QEMU's schema (qapi/net.json) as typed JSON
# members; these are the members of the types qemuser has, as -netdev options.
QMP_NETDEV_MEMBERS: dict[str, dict[str, str]] = {
    "user": {
        "net": "string", "host": "string", "dns": "string", "dhcpstart": "string",
        "restrict": "boolean", "ipv4": "boolean", "ipv6": "boolean", "hostname": "string",
        "domainname": "string", "tftp": "string", "bootfile": "string",
        "hostfwd": "array", "guestfwd": "array",
    },
    "socket": {"listen": "string", "connect": "string", "udp": "string", "localaddr": "string"},
}  # fmt: skip
QMP_NETDEV_TYPES = ("user", "tap", "l2tpv3", "socket", "stream", "dgram", "vde", "bridge",
                    "hubport", "netmap", "vhost-user", "vhost-vdpa")  # fmt: skip
QMP_NETDEV_KEYS = tuple(sorted({key for members in QMP_NETDEV_MEMBERS.values() for key in members}))


def netdev_text(arguments: dict) -> str:
    """QMP netdev_add's arguments as the -netdev text that means the same, with QEMU's errors
    (the QAPI visitor's words) for members of the wrong type or of another type."""
    kind, netdev_id = arguments["type"], arguments["id"]
    for name, value in (("id", netdev_id), ("type", kind)):
        if not isinstance(value, str):
            raise NetClientError(f"Invalid parameter type for '{name}', expected: string")
    if kind not in QMP_NETDEV_TYPES:
        raise NetClientError(f"Parameter 'type' does not accept value '{kind}'")
    members = QMP_NETDEV_MEMBERS.get(kind, {})
    words = [kind, f"id={netdev_id}"]
    for key, value in arguments.items():
        if key in ("id", "type"):
            continue
        expected = members.get(key)
        if expected is None:
            raise NetClientError(f"Parameter '{key}' is unexpected")
        if expected == "boolean" and isinstance(value, bool):
            words.append(f"{key}={'on' if value else 'off'}")
        elif expected == "string" and isinstance(value, str):
            words.append(f"{key}={value}")
        elif expected == "array" and isinstance(value, list):
            for item in value:  # [{"str": "tcp::2222-:22"}, ...]
                if not isinstance(item, dict) or not isinstance(item.get("str"), str):
                    raise NetClientError(f"Parameter '{key}.str' is missing")
                words.append(f"{key}={item['str']}")
        else:
            raise NetClientError(f"Invalid parameter type for '{key}', expected: {expected}")
    # a value with a comma is written doubled, as QEMU's option syntax escapes it
    return ",".join(word.replace(",", ",,") for word in words)
