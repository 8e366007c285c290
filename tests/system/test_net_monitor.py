"""The network seen and changed through the monitors, in QEMU 7.2's words (each expected text
below was compared with qemu-system-aarch64 7.2's for the same command line and commands; the
generated netdev names `#netNNN` end in two random digits there too): `info network`,
`hostfwd_add`/`hostfwd_remove` (a host port that starts and stops reaching libslirp),
`netdev_add`/`netdev_del` over HMP and QMP, `info usernet`. The machine stays paused (-S): the
network exists and answers without a guest running."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.system.conftest import BIN, fixture
from tests.system.netguest import free_port


class Machine:
    """qemuser-system-aarch64 -S with a QMP socket; HMP through human-monitor-command."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        path = tmp_path / "qmp.sock"
        self.proc = subprocess.Popen(
            [str(BIN / "qemuser-system-aarch64"), "-M", "virt", "-S", "-display", "none",
             "-serial", "none", "-qmp", f"unix:{path},server=on,wait=off",
             "-kernel", str(fixture("hello-aarch64.elf")), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not path.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise AssertionError(f"no QMP socket: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.stream = self.sock.makefile("rw")
        assert "QMP" in json.loads(self.stream.readline())
        assert self.qmp("qmp_capabilities") == {"return": {}}

    def qmp(self, name: str, **arguments: object) -> dict:
        request: dict = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.stream.write(json.dumps(request) + "\n")
        self.stream.flush()
        while True:
            reply = json.loads(self.stream.readline())
            if "event" not in reply:
                return reply

    def hmp(self, line: str) -> str:
        reply = self.qmp("human-monitor-command", **{"command-line": line})
        return reply["return"].replace("\r\n", "\n")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture
def machine(tmp_path: Path):
    made: list[Machine] = []

    def start(*args: str) -> Machine:
        made.append(Machine(tmp_path, *args))
        return made[-1]

    yield start
    for m in made:
        m.close()


def test_info_network_nics_backends_and_a_lonely_netdev(machine) -> None:
    port = free_port()
    m = machine(
        *("-nic", "user,hostfwd=tcp:127.0.0.1:0-:22"),
        *("-netdev", "user,id=u1,net=192.168.7.0/24,restrict=on"),
        *("-device", "virtio-net-device,netdev=u1,mac=52:54:00:aa:bb:cc"),
        *("-netdev", f"socket,id=s0,listen=127.0.0.1:{port}"),
        *("-device", "virtio-net-pci,netdev=s0,id=nic9"),
        *("-netdev", "user,id=lonely"),
    )
    text = m.hmp("info network")
    assert re.fullmatch(
        "lonely: index=0,type=user,net=10.0.2.0,restrict=off\n"
        "virtio-net-pci.0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\n"
        r" \\ #net\d{3}: index=0,type=user,net=10.0.2.0,restrict=off"
        "\n"
        "virtio-net-device.0: index=0,type=nic,model=virtio-net-device,macaddr=52:54:00:aa:bb:cc\n"
        r" \\ u1: index=0,type=user,net=192.168.7.0,restrict=on"
        "\n"
        # an id= names the NIC; the next default MAC skips the NIC that was given one
        "nic9: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:57\n"
        r" \\ s0: index=0,type=socket,"
        "\n",
        text,
    ), text
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        for _ in range(100):  # the socket backend takes its client on a thread of its own
            text = m.hmp("info network")
            if "socket: connection from 127.0.0.1:" in text:
                break
            time.sleep(0.05)
    assert re.search(r"\n \\ s0: index=0,type=socket,socket: connection from 127\.0\.0\.1:\d+\n",
                     text), text  # fmt: skip


def test_default_network_is_a_nic_and_user_networking_on_hub_0(machine) -> None:
    text = machine().hmp("info network")
    assert re.fullmatch(
        "hub 0\n"
        r" \\ hub0port1: #net\d{3}: index=0,type=user,net=10.0.2.0,restrict=off"
        "\n"
        r" \\ hub0port0: virtio-net-pci.0: index=0,type=nic,model=virtio-net-pci,"
        "macaddr=52:54:00:12:34:56\n",
        text,
    ), text


def connects(port: int) -> bool:
    """Whether something listens on the loopback port: libslirp accepts, then resets the
    connection when no guest answers behind it (the machine is paused)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return True
    except ConnectionRefusedError:
        return False
    except ConnectionResetError:
        return True


def test_hostfwd_add_and_remove(machine) -> None:
    port, other = free_port(), free_port()
    m = machine("-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
    assert not connects(port)
    assert m.hmp(f"hostfwd_add tcp:127.0.0.1:{port}-:22") == ""
    assert connects(port)  # libslirp listens there now
    assert m.hmp(f"hostfwd_add tcp:127.0.0.1:{port}-:22") == (
        f"Could not set up host forwarding rule 'tcp:127.0.0.1:{port}-:22'\n"
    )
    assert m.hmp(f"hostfwd_add n0 tcp:127.0.0.1:{other}-10.0.2.15:80") == ""
    usernet = m.hmp("info usernet").splitlines()
    assert usernet[:2] == [
        "Hub -1 (n0):",
        "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ",
    ]
    assert re.fullmatch(rf"  TCP\[HOST_FORWARD\] +\d+ +127\.0\.0\.1 +{other} +10\.0\.2\.15 +80"
                        r" +0 +0", usernet[2]), usernet  # fmt: skip
    assert m.hmp("hostfwd_add bogus tcp::1-:22") == "unrecognized netdev id 'bogus'\n"
    assert m.hmp("hostfwd_add tcp:5555") == (
        "Invalid host forwarding rule 'tcp:5555' (Missing : separator)\n"
    )
    assert (
        m.hmp("hostfwd_add tcp::x-:22")
        == "Invalid host forwarding rule 'tcp::x-:22' (Bad host port)\n"
    )
    assert m.hmp(f"hostfwd_remove tcp:127.0.0.1:{port}") == (
        f"host forwarding rule for tcp:127.0.0.1:{port} removed\n"
    )
    assert not connects(port)
    assert m.hmp(f"hostfwd_remove tcp:127.0.0.1:{port}") == (
        f"host forwarding rule for tcp:127.0.0.1:{port} not found\n"
    )
    assert m.hmp(f"hostfwd_remove n0 tcp:127.0.0.1:{other}") == (
        f"host forwarding rule for tcp:127.0.0.1:{other} removed\n"
    )
    assert m.hmp("hostfwd_remove bad") == "invalid format\n"
    assert m.hmp("hostfwd_add") == (
        'hostfwd_add: string expected\nTry "help hostfwd_add" for more information\n'
    )
    assert m.hmp("help hostfwd_remove") == (
        "hostfwd_remove [netdev_id] [tcp|udp]:[hostaddr]:hostport -- "
        "remove host-to-guest TCP or UDP redirection\n"
    )


def test_netdev_add_and_del_over_hmp(machine) -> None:
    m = machine("-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
    assert m.hmp("netdev_add user,id=x") == ""
    assert m.hmp("netdev_add user,id=x") == (
        "qemuser-system-aarch64: Duplicate ID 'x' for netdev\n"
        'Try "help netdev_add" for more information\n'
    )
    assert m.hmp("netdev_add user") == "Error: Parameter 'id' is missing\n"
    assert m.hmp("netdev_add bogus,id=y") == (
        "Error: Parameter 'type' does not accept value 'bogus'\n"
    )
    assert m.hmp("netdev_add user,id=w,foo=1") == "Error: Invalid parameter 'foo'\n"
    nic = (
        "virtio-net-pci.0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\n"
        " \\ n0: index=0,type=user,net=10.0.2.0,restrict=off\n"
    )
    assert m.hmp("info network") == nic + "x: index=0,type=user,net=10.0.2.0,restrict=off\n"
    assert m.hmp("netdev_del x") == ""
    assert m.hmp("netdev_del x") == "Error: Device 'x' not found\n"
    # a backend a NIC holds stays listed with it (QEMU's pending deletion); its link is down
    assert m.hmp("netdev_del n0") == ""
    assert m.hmp("info network") == nic
    assert m.hmp("netdev_del") == (
        'netdev_del: string expected\nTry "help netdev_del" for more information\n'
    )


def test_netdev_add_and_del_over_qmp(machine) -> None:
    port = free_port()
    m = machine("-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
    assert m.qmp("netdev_add", type="user", id="x") == {"return": {}}
    assert m.qmp("netdev_add", type="user", id="x") == {
        "error": {"class": "GenericError", "desc": "Duplicate ID 'x'"}
    }
    assert m.qmp("netdev_add", type="user") == {
        "error": {"class": "GenericError", "desc": "Parameter 'id' is missing"}
    }
    assert m.qmp("netdev_add", id="y") == {
        "error": {"class": "GenericError", "desc": "Parameter 'type' is missing"}
    }
    assert m.qmp("netdev_add", type="bogus", id="y") == {
        "error": {"class": "GenericError", "desc": "Parameter 'type' does not accept value 'bogus'"}
    }
    assert m.qmp("netdev_add", type="user", id="w", foo=1) == {
        "error": {"class": "GenericError", "desc": "Parameter 'foo' is unexpected"}
    }
    assert m.qmp("netdev_add", type="user", id="v", restrict="on") == {
        "error": {
            "class": "GenericError",
            "desc": "Invalid parameter type for 'restrict', expected: boolean",
        }
    }
    assert m.qmp(
        "netdev_add", type="user", id="z", net="10.9.0.0/16", restrict=True,
        hostfwd=[{"str": f"tcp:127.0.0.1:{port}-:22"}],
    ) == {"return": {}}  # fmt: skip
    assert connects(port)
    assert m.hmp("info network").endswith(
        "x: index=0,type=user,net=10.0.2.0,restrict=off\n"
        "z: index=0,type=user,net=10.9.0.0,restrict=on\n"
    )
    assert m.qmp("netdev_del", id="z") == {"return": {}}
    assert not connects(port)  # the backend is gone, and its forwarding with it
    assert m.qmp("netdev_del", id="z") == {
        "error": {"class": "DeviceNotFound", "desc": "Device 'z' not found"}
    }
    assert m.qmp("netdev_del") == {
        "error": {"class": "GenericError", "desc": "Parameter 'id' is missing"}
    }
