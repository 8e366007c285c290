"""QMP and HMP as protocols, against a small machine stand-in (the monitors only see a machine
through the MonitorTarget protocol): QEMU's greeting, negotiation, error classes and wording,
events with timestamps, the qemu.qmp client from PyPI, and HMP's output formats. The expected
texts are what Debian's QEMU 7.2 printed for the same requests and the same memory bytes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from qemuser.system.chardev.sockets import ChardevError, parse_socket_spec
from qemuser.system.monitor.hmp import HmpInterpreter
from qemuser.system.monitor.qmp import QmpSession
from qemuser.system.monitor.server import MonitorServer
from qemuser.system.monitor.target import BlockInfo, CpuInfo, EventBus, MachineInfo

# The first 20 bytes QEMU's virt board puts at the start of RAM (the DTB header), as read by
# `xp` under QEMU 7.2 in the session that recorded the expected outputs below.
DTB_HEAD = bytes.fromhex("d00dfeed001000000000004000001b4c00000030")


class Board:
    """What a machine answers; records what the monitor asked of it."""

    def __init__(self) -> None:
        self.events = EventBus()
        self.state = "running"
        self.calls: list[str] = []
        self.memory = {0x4000_0000: DTB_HEAD}

    name = "testvm"

    @property
    def run_state(self) -> str:
        return self.state

    def pause(self) -> None:
        self.calls.append("pause")
        self.state = "paused"
        self.events.emit("STOP")

    def resume(self) -> None:
        self.calls.append("resume")
        self.state = "running"
        self.events.emit("RESUME")

    def reset(self, reason: str) -> None:
        self.calls.append("reset")
        self.events.emit("RESET", {"guest": False, "reason": reason})

    def powerdown(self) -> None:
        self.calls.append("powerdown")
        self.events.emit("POWERDOWN")

    def quit(self, reason: str) -> None:
        self.calls.append("quit")
        self.events.emit("SHUTDOWN", {"guest": False, "reason": reason})

    def cpus(self) -> list[CpuInfo]:
        return [CpuInfo(0, 4242, "aarch64", "cortex-a72-arm-cpu", 0x4000_0000)]

    def blocks(self) -> list[BlockInfo]:
        return [
            BlockInfo(
                "virtio0",
                "/machine/peripheral-anon/device[0]/virtio-backend",
                "disk.img",
                "raw",
                False,
                1 << 20,
            )
        ]

    def register_dump(self, cpu_index: int) -> str:
        return f" PC=0000000040000000 (cpu {cpu_index})\n"

    def read_memory(self, addr: int, size: int, physical: bool, cpu_index: int) -> bytes:
        for base, data in self.memory.items():
            if base <= addr and addr + size <= base + len(data):
                return data[addr - base : addr - base + size]
        if addr < 0x100:
            return bytes(size)
        raise ValueError("unmapped")

    def memory_tree(self) -> str:
        return ""

    def device_tree(self) -> str:
        return ""

    def chardevs(self) -> list[tuple[str, str]]:
        return [("compat_monitor0", "unix:/tmp/q.sock,server=on")]

    def disassemble(self, addr: int, count: int, cpu_index: int) -> list[str]:
        return [f"0x{addr + 4 * i:08x}:  d503201f  nop" for i in range(count)]

    def machines(self) -> list[MachineInfo]:
        return [MachineInfo("virt-7.2", "virt", False, 512, "cortex-a15-arm-cpu", "mach-virt.ram")]


def session(board: Board) -> tuple[QmpSession, list[dict]]:
    sent: list[dict] = []
    qmp = QmpSession(
        board, lambda data: sent.extend(json.loads(line) for line in data.splitlines())
    )
    qmp.start()
    return qmp, sent


def test_greeting_and_negotiation_as_qemu():
    board = Board()
    qmp, sent = session(board)
    assert sent.pop(0) == {
        "QMP": {
            "version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "qemuser"},
            "capabilities": ["oob"],
        }
    }
    qmp.feed(b'{"execute":"query-status"}\n')
    assert sent.pop() == {
        "error": {
            "class": "CommandNotFound",
            "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
        }
    }
    qmp.feed(b'{"execute":"qmp_capabilities"}')
    assert sent.pop() == {"return": {}}
    qmp.feed(b'{"execute":"qmp_capabilities"}')
    assert sent.pop() == {
        "error": {
            "class": "CommandNotFound",
            "desc": "Capabilities negotiation is already complete, command ignored",
        }
    }


@pytest.mark.parametrize(
    ("request_text", "reply"),
    [  # each reply is what QEMU 7.2 sent for the same request
        (
            '{"execute":"query-status","id":7}',
            {"return": {"status": "running", "singlestep": False, "running": True}, "id": 7},
        ),
        (
            '{"execute":"nosuch"}',
            {
                "error": {
                    "class": "CommandNotFound",
                    "desc": "The command nosuch has not been found",
                }
            },
        ),
        ("[1,2]", {"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}),
        (
            '{"foo":1}',
            {"error": {"class": "GenericError", "desc": "QMP input member 'foo' is unexpected"}},
        ),
        (
            '{"execute":1}',
            {
                "error": {
                    "class": "GenericError",
                    "desc": "QMP input member 'execute' must be a string",
                }
            },
        ),
        (
            '{"execute":"query-status","arguments":[]}',
            {
                "error": {
                    "class": "GenericError",
                    "desc": "QMP input member 'arguments' must be an object",
                }
            },
        ),
        (
            '{"execute":"query-status","arguments":{"x":1}}',
            {"error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"}},
        ),
        ('{"execute":"query-name"}', {"return": {"name": "testvm"}}),
        (
            '{"execute":"query-hotpluggable-cpus"}',
            {
                "error": {
                    "class": "GenericError",
                    "desc": "The feature 'query-hotpluggable-cpus' is not enabled",
                }
            },
        ),
        (
            '{"execute":"human-monitor-command","arguments":{"command-line":"info status"}}',
            {"return": "VM status: running\r\n"},
        ),
        (
            '{"execute":"human-monitor-command","arguments":{"command-line":"info bogus"}}',
            {"return": "unknown command: 'info bogus'\r\n"},
        ),
        (
            '{"execute":"human-monitor-command","arguments":{"command-line":"bogus"}}',
            {"return": "unknown command: 'bogus'\r\n"},
        ),
        (
            '{"execute":"human-monitor-command"}',
            {"error": {"class": "GenericError", "desc": "Parameter 'command-line' is missing"}},
        ),
    ],
)
def test_replies_as_qemu(request_text, reply):
    qmp, sent = session(Board())
    qmp.feed(b'{"execute":"qmp_capabilities"}')
    qmp.feed(request_text.encode() + b"\n")
    assert sent[-1] == reply


def test_query_cpus_fast_as_qemu():
    qmp, sent = session(Board())
    qmp.feed(b'{"execute":"qmp_capabilities"}{"execute":"query-cpus-fast"}')
    assert sent[-1] == {
        "return": [
            {
                "thread-id": 4242,
                "props": {"core-id": 0, "thread-id": 0, "socket-id": 0, "cluster-id": 0},
                "qom-path": "/machine/unattached/device[0]",
                "cpu-index": 0,
                "target": "aarch64",
            }
        ]
    }


def test_requests_split_across_reads_and_malformed_json():
    qmp, sent = session(Board())
    qmp.feed(b'{"execute":"qmp_capa')
    assert len(sent) == 1  # only the greeting: the request is not complete
    qmp.feed(b'bilities"}\n{"execute": "query-kvm"}\n')
    assert sent[-2:] == [{"return": {}}, {"return": {"enabled": False, "present": False}}]
    qmp.feed(b'{"execute": nonsense}\n')
    assert sent[-1]["error"]["class"] == "GenericError"
    assert sent[-1]["error"]["desc"].startswith("JSON parse error")
    qmp.feed(b'{"execute":"query-name"}\n')  # the stream goes on after the error
    assert sent[-1] == {"return": {"name": "testvm"}}


def test_events_follow_commands_with_timestamps():
    board = Board()
    qmp, sent = session(board)
    qmp.feed(b'{"execute":"qmp_capabilities"}')
    before = time.time()
    for name in ("stop", "cont", "system_reset", "system_powerdown"):
        qmp.feed(json.dumps({"execute": name}).encode())
    events = [m for m in sent if "event" in m]
    assert [e["event"] for e in events] == ["STOP", "RESUME", "RESET", "POWERDOWN"]
    assert events[2]["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    for event in events:
        stamp = event["timestamp"]["seconds"] + event["timestamp"]["microseconds"] / 1e6
        assert before - 1 <= stamp <= time.time() + 1
    assert board.calls == ["pause", "resume", "reset", "powerdown"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [  # QEMU 7.2's output for the same bytes
        ("xp /4wx 0x40000000", "0000000040000000: 0xedfe0dd0 0x00001000 0x40000000 0x4c1b0000\r\n"),
        ("xp /2gx 0x40000000", "0000000040000000: 0x00001000edfe0dd0 0x4c1b000040000000\r\n"),
        ("x /3xb 0", "0000000000000000: 0x00 0x00 0x00\r\n"),
        (
            "xp /5dw 0x40000000",
            "0000000040000000: 3992849872       4096 1073741824 1276837888\r\n"
            "0000000040000010:  805306368\r\n",
        ),
        ("x /x 0xffffffffffff0000", "ffffffffffff0000: Cannot access memory\r\n"),
        ("info cpus", "* CPU #0: thread_id=4242\r\n"),
        ("info chardev", "compat_monitor0: filename=unix:/tmp/q.sock,server=on\r\n"),
        ("info snapshots", "no block device can store vmstate for snapshot\r\n"),
        ("info version", "7.2.0qemuser\r\n"),
        ("xp /2i 0x40000000", "0x40000000:  d503201f  nop\r\n0x40000004:  d503201f  nop\r\n"),
    ],
)
def test_hmp_output_as_qemu(line, expected):
    assert HmpInterpreter(Board()).run(line) == expected


def test_hmp_remembers_the_last_format_as_qemu():
    hmp = HmpInterpreter(Board())
    hmp.run("xp /2gx 0x40000000")
    assert hmp.run("xp 0x40000000") == "0000000040000000: 0x00001000edfe0dd0\r\n"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus:/x", "'bogus:/x' is not a valid char driver"),
        ("tcp::99999,server=on", "chardev: socket: bad port '99999'"),
        ("unix:/tmp/x,wait=maybe", "Parameter 'wait' expects 'on' or 'off'"),
        ("unix:/tmp/x,colour=on", "Invalid parameter 'colour'"),
    ],
)
def test_bad_socket_specs(spec, message):
    with pytest.raises(ChardevError, match=message):
        parse_socket_spec(spec)


def test_qemu_qmp_client_drives_a_unix_socket_monitor(tmp_path):
    qmp_client = pytest.importorskip("qemu.qmp")
    board = Board()
    path = tmp_path / "qmp.sock"
    server = MonitorServer(parse_socket_spec(f"unix:{path},server=on,wait=off"), board)
    server.start()

    async def drive() -> tuple[dict, dict, list[str], str]:
        client = qmp_client.QMPClient("test")
        await client.connect(str(path))
        status = await client.execute("query-status")
        version = await client.execute("query-version")
        names = []
        with client.listener() as listener:
            await client.execute("stop")
            event = await asyncio.wait_for(listener.get(), 5)
            names.append(event["event"])
        hmp = await client.execute("human-monitor-command", {"command-line": "info status"})
        try:
            await client.execute("nosuch")
        except qmp_client.ExecuteError as exc:
            names.append(exc.error.error.class_)
        await client.disconnect()
        return status, version, names, hmp

    try:
        status, version, names, hmp = asyncio.run(drive())
    finally:
        server.close()
    assert status == {"status": "running", "singlestep": False, "running": True}
    assert version["qemu"] == {"major": 7, "minor": 2, "micro": 0}
    assert names == ["STOP", "CommandNotFound"]
    assert hmp == "VM status: paused\r\n"


def test_hmp_over_tcp_with_banner_and_prompt():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    board = Board()
    server = MonitorServer(
        parse_socket_spec(f"tcp:127.0.0.1:{port},server=on,wait=off"), board, mode="readline"
    )
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            received = b""
            conn.sendall(b"info status\nstop\ninfo status\n")
            deadline = time.time() + 5
            while received.count(b"(qemu) ") < 4 and time.time() < deadline:
                received += conn.recv(4096)
    finally:
        server.close()
    text = received.decode()
    assert text.startswith("QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) ")
    assert "VM status: running\r\n" in text and "VM status: paused\r\n" in text
    assert board.calls == ["pause"]
    assert threading.active_count() >= 1
