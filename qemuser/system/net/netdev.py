"""-netdev, -nic and -net: QEMU's three ways to say what network a guest has, parsed into
backends and NIC requests.

- `-netdev TYPE,id=ID,...` makes a backend; a NIC names it with `netdev=ID`.
- `-nic TYPE,...[,model=M][,mac=MAC]` makes both (model default: the board's, virtio-net-pci).
- `-net nic[,model=M][,macaddr=MAC]` and `-net TYPE,...` pair up (QEMU's old hub);
  `-net none` means no network at all (no default NIC).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from qemuser.system.net.backend import (
    NetBackend,
    SocketBackend,
    SocketSpec,
    UserBackend,
    parse_host_port,
)
from qemuser.system.net.slirp import NetdevError, parse_user_options
from qemuser.system.qemuopts import split_options

NETDEV_TYPES = ("user", "socket")
DEFAULT_NIC = "virtio-net-pci"
NIC_MODELS = ("virtio-net-pci", "virtio-net-device")


@dataclass
class NicRequest:
    """A NIC the command line asks for (-nic or -net nic): becomes a -device of `model`."""

    model: str
    netdev: str
    mac: str | None = None


@dataclass
class HubPort:
    """A port of QEMU's hub 0, which -net options plug into: a NIC or a backend."""

    name: str  # hub0port0, hub0port1, ... in command-line order
    nic: NicRequest | None = None
    netdev: str | None = None


@dataclass
class NetworkPlan:
    backends: dict[str, NetBackend] = field(default_factory=dict)
    nics: list[NicRequest] = field(default_factory=list)
    none: bool = False  # -net none
    hub: list[HubPort] = field(default_factory=list)
    _generated: int = 0

    def generated_id(self) -> str:
        """QEMU's id_generate for a netdev without an id (-nic, -net): "#net", a counter and
        two random digits."""
        name = f"#net{self._generated}{random.randrange(100):02d}"
        self._generated += 1
        return name

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()


def make_backend(
    kind: str, netdev_id: str, options: list[tuple[str, str]], option: str
) -> NetBackend:
    if kind == "user":
        try:
            return UserBackend(netdev_id, parse_user_options(options))
        except NetdevError as exc:
            # QEMU says where each line of an error comes from (guestfwd's have two)
            lines = str(exc).split("\n")
            raise NetdevError("\n".join(f"{option}: {line}" for line in lines)) from None
    if kind == "socket":
        values = dict(options)
        unknown = set(values) - {"listen", "connect", "udp", "localaddr", "id"}
        if unknown:
            raise NetdevError(f"{option}: Invalid parameter '{sorted(unknown)[0]}'")
        modes = [m for m in ("listen", "connect", "udp") if m in values]
        if len(modes) != 1:
            raise NetdevError(
                f"{option}: exactly one of listen=, connect=, mcast= or udp= is required"
            )
        mode = modes[0]
        host, port = parse_host_port(values[mode], option)
        local_host, local_port = "", 0
        if mode == "udp":
            if "localaddr" not in values:
                raise NetdevError(f"{option}: localaddr= is mandatory with udp=")
            local_host, local_port = parse_host_port(values["localaddr"], option)
        elif "localaddr" in values:
            raise NetdevError(f"{option}: localaddr= is only valid with udp=")
        return SocketBackend(netdev_id, SocketSpec(mode, host, port, local_host, local_port))
    if kind in ("tap", "bridge", "vde", "l2tpv3", "vhost-user", "stream", "dgram", "hubport"):
        raise NetdevError(f"{option}: network backend '{kind}' is not supported by qemuser")
    raise NetdevError(f"{option}: Parameter 'type' does not accept value '{kind}'")


def add_netdev(plan: NetworkPlan, text: str) -> None:
    option = f"-netdev {text}"
    pairs = split_options(text)
    kind = pairs[0][0] if not pairs[0][1] else ""
    if not kind:
        raise NetdevError(f"{option}: Parameter 'type' is missing")
    options = pairs[1:]
    netdev_id = dict(options).get("id", "")
    if not netdev_id:
        raise NetdevError(f"{option}: Parameter 'id' is missing")
    if netdev_id in plan.backends:
        raise NetdevError(f"{option}: Duplicate ID '{netdev_id}' for netdev")
    plan.backends[netdev_id] = make_backend(kind, netdev_id, options, option)


def add_nic(plan: NetworkPlan, text: str) -> None:
    option = f"-nic {text}"
    pairs = split_options(text)
    kind = pairs[0][0] if not pairs[0][1] else "user"
    rest = pairs[1:] if not pairs[0][1] else pairs
    model, mac = DEFAULT_NIC, None
    backend_options = []
    for key, value in rest:
        if key == "model":
            model = value
        elif key == "mac":
            mac = value
        else:
            backend_options.append((key, value))
    if kind == "none":
        return
    if model not in NIC_MODELS:
        raise NetdevError(f"Unsupported NIC model: {model}")
    netdev_id = plan.generated_id()
    plan.backends[netdev_id] = make_backend(kind, netdev_id, backend_options, option)
    plan.nics.append(NicRequest(model, netdev_id, mac))


def add_net(plan: NetworkPlan, text: str) -> None:
    option = f"-net {text}"
    pairs = split_options(text)
    kind = pairs[0][0]
    rest = dict(pairs[1:])
    if kind == "none":
        plan.none = True
        return
    if kind == "nic":
        model = rest.get("model", DEFAULT_NIC)
        if model in ("virtio", "virtio-net"):
            model = DEFAULT_NIC
        if model not in NIC_MODELS:
            raise NetdevError(f"Unsupported NIC model: {model}")
        nic = NicRequest(model, rest.get("netdev", ""), rest.get("macaddr"))
        plan.nics.append(nic)
        if not nic.netdev:
            plan.hub.append(HubPort(f"hub0port{len(plan.hub)}", nic=nic))
            _pair_hub(plan)
        return
    netdev_id = rest.pop("id", None) or plan.generated_id()
    plan.backends[netdev_id] = make_backend(kind, netdev_id, list(rest.items()), option)
    plan.hub.append(HubPort(f"hub0port{len(plan.hub)}", netdev=netdev_id))
    _pair_hub(plan)


def _pair_hub(plan: NetworkPlan) -> None:
    """Each NIC on the hub gets the next backend on it. QEMU's hub repeats every frame to all
    its ports; one NIC to one backend, the common case, is the same thing without the hub."""
    taken = {port.nic.netdev for port in plan.hub if port.nic is not None}
    free = [p.netdev for p in plan.hub if p.netdev is not None and p.netdev not in taken]
    for port in plan.hub:
        if port.nic is not None and not port.nic.netdev and free:
            port.nic.netdev = free.pop(0) or ""


def mac_address(text: str | None, index: int, option: str) -> bytes:
    """mac=52:54:00:12:34:56; QEMU's default for the n-th NIC is 52:54:00:12:34:(56+n)."""
    if text is None:
        return bytes((0x52, 0x54, 0x00, 0x12, 0x34, 0x56 + index))
    parts = text.split(":")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        mac = b""
    if len(parts) != 6 or len(mac) != 6 or any(len(p) != 2 for p in parts):
        raise NetdevError(f"{option}: Property 'virtio-net-device.mac' doesn't take value '{text}'")
    if mac[0] & 1:
        raise NetdevError(f"{option}: Property 'virtio-net-device.mac' doesn't take value '{text}'")
    return mac


def plan_network(
    netdevs: list[str], nics: list[str], nets: list[str], defaults: bool
) -> NetworkPlan:
    """The backends and NICs of the command line's -netdev/-nic/-net options (in their order);
    with `defaults` (no -nodefaults) and no network option at all, QEMU's default NIC: a
    virtio-net-pci on user networking."""
    plan = NetworkPlan()
    try:
        for text in netdevs:
            add_netdev(plan, text)
        for text in nics:
            add_nic(plan, text)
        for text in nets:
            add_net(plan, text)
        if defaults and not (netdevs or nics or nets):
            add_net(plan, "nic")  # QEMU's default: -net nic -net user, on hub 0
            add_net(plan, "user")
        for port in plan.hub:
            if port.nic is not None and not port.nic.netdev:
                raise NetdevError(
                    f"-net nic: no backend for the NIC on hub port {port.name} (add -net user)"
                )
    except NetdevError:
        plan.close()
        raise
    return plan


def nic_device(nic: NicRequest) -> tuple[str, dict[str, str]]:
    """The -device a -nic/-net nic request stands for: (option text, parsed options)."""
    opts = {"driver": nic.model, "netdev": nic.netdev}
    if nic.mac is not None:
        opts["mac"] = nic.mac
    text = ",".join([nic.model] + [f"{k}={v}" for k, v in opts.items() if k != "driver"])
    return text, opts
