"""-netdev, -nic and -net as QEMU parses them: backends by id, NIC requests, QEMU's default NIC,
and the errors (the messages are those Debian's QEMU 7.2 printed for the same options)."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest

from qemuser.system.net.backend import SocketBackend, UserBackend
from qemuser.system.net.netdev import mac_address, nic_device, plan_network
from qemuser.system.net.slirp import NetdevError
from tests.system.conftest import BIN


def test_netdev_and_device_pairing():
    plan = plan_network(["user,id=n0,hostfwd=tcp:127.0.0.1:0-:22"], [], [], defaults=True)
    try:
        assert isinstance(plan.backends["n0"], UserBackend)
        assert plan.nics == []  # -netdev alone makes no NIC, and no default one either
    finally:
        plan.close()


def test_nic_shorthand_makes_backend_and_nic():
    plan = plan_network([], ["user,model=virtio-net-device,mac=52:54:00:aa:bb:cc"], [], True)
    try:
        (nic,) = plan.nics
        assert nic.model == "virtio-net-device" and nic.mac == "52:54:00:aa:bb:cc"
        assert isinstance(plan.backends[nic.netdev], UserBackend)
        text, opts = nic_device(nic)
        assert opts == {"driver": "virtio-net-device", "netdev": nic.netdev, "mac": nic.mac}
        assert text.startswith("virtio-net-device,netdev=")
    finally:
        plan.close()


def test_net_nic_and_net_user_pair_up_and_net_none():
    plan = plan_network([], [], ["nic", "user"], True)
    try:
        (nic,) = plan.nics
        assert nic.model == "virtio-net-pci"
        assert isinstance(plan.backends[nic.netdev], UserBackend)
    finally:
        plan.close()
    empty = plan_network([], [], ["none"], True)
    assert empty.none and empty.nics == [] and empty.backends == {}


def test_default_nic_unless_nodefaults():
    plan = plan_network([], [], [], defaults=True)
    try:
        (nic,) = plan.nics
        assert nic.model == "virtio-net-pci"
        # QEMU's default is `-net nic -net user`: both on hub 0, the NIC's port first, the
        # backend named by QEMU's id generator
        assert [(port.name, port.nic is nic) for port in plan.hub] == [
            ("hub0port0", True),
            ("hub0port1", False),
        ]
        assert re.fullmatch(r"#net\d{3}", nic.netdev) and plan.hub[1].netdev == nic.netdev
    finally:
        plan.close()
    assert plan_network([], [], [], defaults=False).nics == []


def test_net_options_pair_in_order_whichever_comes_first():
    plan = plan_network([], [], ["user,id=first", "nic", "nic,macaddr=52:54:00:aa:bb:cc",
                                 "user,id=second"], True)  # fmt: skip
    try:
        assert [(nic.netdev, nic.mac) for nic in plan.nics] == [
            ("first", None),
            ("second", "52:54:00:aa:bb:cc"),
        ]
        assert [port.name for port in plan.hub] == [f"hub0port{i}" for i in range(4)]
    finally:
        plan.close()


def test_guestfwd_device_errors_are_qemus_two_lines_on_the_command_line():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there
    option = f"user,id=n0,guestfwd=tcp:10.0.2.100:1234-tcp:127.0.0.1:{port}"
    result = subprocess.run(
        [str(BIN / "qemuser-system-aarch64"), "-M", "virt", "-netdev", option],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        f"qemuser-system-aarch64: -netdev {option}: Failed to connect to '127.0.0.1:{port}': "
        "Connection refused\n"
        f"qemuser-system-aarch64: -netdev {option}: Could not open guest forwarding device "
        "'guestfwd.tcp.1234'\n"
    )


def test_socket_backends_talk_to_each_other():
    import threading

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = plan_network([f"socket,id=s,listen=127.0.0.1:{port}"], [], [], False)
    client = plan_network([f"socket,id=c,connect=127.0.0.1:{port}"], [], [], False)
    got: list[bytes] = []
    arrived = threading.Event()

    def receive(frame: bytes) -> None:
        got.append(frame)
        arrived.set()

    try:
        listener, connector = server.backends["s"], client.backends["c"]
        assert isinstance(listener, SocketBackend)
        listener.start(receive)
        connector.start(lambda frame: None)
        connector.send(b"frame one")
        connector.send(b"frame two!")
        assert arrived.wait(5)
        deadline = 50
        while len(got) < 2 and deadline:
            arrived.clear()
            arrived.wait(0.1)
            deadline -= 1
        assert got == [b"frame one", b"frame two!"]  # length-prefixed: boundaries kept
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize(
    ("netdevs", "nics", "nets", "message"),
    [  # QEMU 7.2's words
        (["user"], [], [], "-netdev user: Parameter 'id' is missing"),
        (
            ["bogus,id=n"],
            [],
            [],
            "-netdev bogus,id=n: Parameter 'type' does not accept value 'bogus'",
        ),
        (["user,id=n,foo=1"], [], [], "-netdev user,id=n,foo=1: Invalid parameter 'foo'"),
        (
            ["user,id=n,hostfwd=tcp:2222-:22"],
            [],
            [],
            "-netdev user,id=n,hostfwd=tcp:2222-:22: Invalid host forwarding rule 'tcp:2222-:22' "
            "(Bad host address)",
        ),
        (
            ["user,id=n,restrict=maybe"],
            [],
            [],
            "-netdev user,id=n,restrict=maybe: Parameter 'restrict' expects 'on' or 'off'",
        ),
        (
            ["socket,id=n"],
            [],
            [],
            "-netdev socket,id=n: exactly one of listen=, connect=, mcast= or udp= is required",
        ),
        (["user,id=n", "user,id=n"], [], [], "-netdev user,id=n: Duplicate ID 'n' for netdev"),
        ([], ["bogus"], [], "-nic bogus: Parameter 'type' does not accept value 'bogus'"),
        ([], [], ["nic,model=e1000x"], "Unsupported NIC model: e1000x"),
    ],
)
def test_errors_as_qemu(netdevs, nics, nets, message):
    with pytest.raises(NetdevError) as caught:
        plan_network(netdevs, nics, nets, True).close()
    assert str(caught.value) == message


def test_mac_addresses():
    assert mac_address(None, 1, "-device") == bytes.fromhex("525400123457")
    assert mac_address("52:54:00:ab:cd:ef", 0, "-device") == bytes.fromhex("525400abcdef")
    with pytest.raises(
        NetdevError, match="^-device x: Property 'virtio-net-device.mac' doesn't take value 'zz'$"
    ):
        mac_address("zz", 0, "-device x")
