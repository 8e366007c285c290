"""QMP, the QEMU Machine Protocol: JSON commands and events over a chardev stream.

One `QmpSession` per connection: it sends the greeting, takes bytes in (`feed`), and returns the
replies to send. Requests may span lines or share one; a malformed one gets QEMU's error and the
stream goes on. Errors carry QEMU's classes (GenericError, CommandNotFound) and QEMU's wording,
so clients written against QEMU (libvirt, the qemu.qmp package) behave the same.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

from qemuser.system.monitor.hmp import HmpInterpreter
from qemuser.system.monitor.target import PACKAGE, QEMU_VERSION, MonitorTarget
from qemuser.system.net.clients import (
    QMP_NETDEV_KEYS,
    DuplicateNetdev,
    NetClientError,
    netdev_text,
)


class AlreadyAnswered(Exception):
    """Raised by a command that sent its own reply (quit: the reply must go out before the
    machine stops and the connection closes)."""


class QmpError(Exception):
    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class


@dataclass(frozen=True)
class Command:
    name: str
    run: Callable[[QmpSession, dict], object]
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {}


def command(name: str, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()):
    def register(run: Callable[[QmpSession, dict], object]) -> Callable[[QmpSession, dict], object]:
        COMMANDS[name] = Command(name, run, required, optional)
        return run

    return register


def version_info() -> dict:
    major, minor, micro = QEMU_VERSION
    return {"qemu": {"micro": micro, "minor": minor, "major": major}, "package": PACKAGE}


class QmpSession:
    """One client connection. `send` writes one serialized message (events may come from other
    threads, so writes are serialized by a lock)."""

    def __init__(self, target: MonitorTarget, send: Callable[[bytes], None]) -> None:
        self.target = target
        self._send_raw = send
        self._send_lock = threading.Lock()
        self._buffer = ""
        self.negotiated = False
        self.oob = False
        self.hmp = HmpInterpreter(target)
        self._unsubscribe: Callable[[], None] | None = None
        self.request_id: object = None  # the current request's "id", echoed in its reply
        self.has_id = False

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\r\n").encode()
        with self._send_lock:
            self._send_raw(data)

    def start(self) -> None:
        self.send({"QMP": {"version": version_info(), "capabilities": ["oob"]}})

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def feed(self, data: bytes) -> None:
        """Bytes from the client: every complete request in them is answered."""
        self._buffer += data.decode("utf-8", errors="replace")
        while True:
            self._buffer = self._buffer.lstrip()
            end = _value_end(self._buffer)
            if end is None:
                return  # nothing, or an object still open: wait for the rest
            text, self._buffer = self._buffer[:end], self._buffer[end:]
            try:
                request = json.loads(text)
            except json.JSONDecodeError as exc:
                self.send(_error(f"JSON parse error, {exc.msg.lower()}"))
                continue
            self.handle(request)

    def handle(self, request: object) -> None:
        reply = self.execute(request)
        if reply is not None:
            self.send(reply)

    def execute(self, request: object) -> dict | None:
        if not isinstance(request, dict):
            return _error("QMP input must be a JSON object")
        request_id = request.get("id")
        self.request_id, self.has_id = request_id, "id" in request
        try:
            name, arguments = _check_request(request, self.oob)
            result = self._dispatch(name, arguments)
        except AlreadyAnswered:
            return None
        except QmpError as exc:
            reply = _error(exc.desc, exc.error_class)
        else:
            reply = {"return": result}
        if "id" in request:
            reply["id"] = request_id
        return reply

    def _dispatch(self, name: str, arguments: dict) -> object:
        if not self.negotiated and name != "qmp_capabilities":
            raise QmpError(
                "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound"
            )
        found = COMMANDS.get(name)
        if found is None:
            raise QmpError(f"The command {name} has not been found", "CommandNotFound")
        for key in arguments:
            if key not in found.required and key not in found.optional:
                raise QmpError(f"Parameter '{key}' is unexpected")
        for key in found.required:
            if key not in arguments:
                raise QmpError(f"Parameter '{key}' is missing")
        return found.run(self, arguments)


def _value_end(text: str) -> int | None:
    """Where the first JSON value of `text` ends, or None while it is incomplete: objects and
    arrays end at their balancing bracket (strings and escapes skipped), anything else at the
    next whitespace, like the token stream of QEMU's JSON streamer."""
    if not text:
        return None
    if text[0] not in "{[":
        for i, char in enumerate(text):
            if char.isspace() or (i and char in "{["):
                return i
        return None
    depth, in_string, escaped = 0, False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _error(desc: str, error_class: str = "GenericError") -> dict:
    return {"error": {"class": error_class, "desc": desc}}


def _check_request(request: dict, oob: bool) -> tuple[str, dict]:
    """QEMU's qmp_dispatch_check_obj: the members a request may have, and their types."""
    for key, value in request.items():
        if key in ("execute", "exec-oob"):
            if not isinstance(value, str):
                raise QmpError(f"QMP input member '{key}' must be a string")
        elif key == "arguments":
            if not isinstance(value, dict):
                raise QmpError("QMP input member 'arguments' must be an object")
        elif key == "control":
            raise QmpError("QMP input member 'control' is unexpected")
        elif key != "id":
            raise QmpError(f"QMP input member '{key}' is unexpected")
    if "execute" in request and "exec-oob" in request:
        raise QmpError("QMP input must have either 'execute' or 'exec-oob', not both")
    if "exec-oob" in request:
        if not oob:
            raise QmpError("QMP input member 'exec-oob' is unexpected")
        return request["exec-oob"], request.get("arguments", {})
    if "execute" not in request:
        raise QmpError("QMP input lacks member 'execute'")
    return request["execute"], request.get("arguments", {})


# --- the commands --------------------------------------------------------------------------


@command("qmp_capabilities", optional=("enable",))
def _qmp_capabilities(session: QmpSession, arguments: dict) -> dict:
    if session.negotiated:
        raise QmpError(
            "Capabilities negotiation is already complete, command ignored", "CommandNotFound"
        )
    for capability in arguments.get("enable", []):
        if capability != "oob":
            raise QmpError("Invalid parameter value for 'enable', expected: oob")
    # Out-of-band execution: every request of a session is already run as soon as it is read,
    # so exec-oob needs nothing more than being accepted.
    session.oob = "oob" in arguments.get("enable", [])
    session.negotiated = True
    session._unsubscribe = session.target.events.subscribe(session.send)
    return {}


@command("query-version")
def _query_version(_session: QmpSession, _arguments: dict) -> dict:
    return version_info()


@command("query-commands")
def _query_commands(_session: QmpSession, _arguments: dict) -> list:
    return [{"name": name} for name in COMMANDS]


@command("query-status")
def _query_status(session: QmpSession, _arguments: dict) -> dict:
    state = session.target.run_state
    return {"status": state, "singlestep": False, "running": state == "running"}


@command("query-name")
def _query_name(session: QmpSession, _arguments: dict) -> dict:
    name = session.target.name
    return {} if name is None else {"name": name}


@command("query-kvm")
def _query_kvm(_session: QmpSession, _arguments: dict) -> dict:
    return {"enabled": False, "present": False}


@command("query-target")
def _query_target(session: QmpSession, _arguments: dict) -> dict:
    return {"arch": session.target.cpus()[0].target}


@command("query-cpus-fast")
def _query_cpus_fast(session: QmpSession, _arguments: dict) -> list:
    return [
        {
            "thread-id": cpu.thread_id,
            "props": {"core-id": cpu.index, "thread-id": 0, "socket-id": 0, "cluster-id": 0},
            "qom-path": cpu.qom_path,
            "cpu-index": cpu.index,
            "target": cpu.target,
        }
        for cpu in session.target.cpus()
    ]


@command("query-hotpluggable-cpus")
def _query_hotpluggable_cpus(_session: QmpSession, _arguments: dict) -> list:
    # QEMU's virt machines (arm and riscv) have no CPU hotplug; QEMU 7.2 answers this.
    raise QmpError("The feature 'query-hotpluggable-cpus' is not enabled")


@command("query-machines")
def _query_machines(session: QmpSession, _arguments: dict) -> list:
    found = []
    for machine in session.target.machines():
        entry: dict = {
            "hotpluggable-cpus": False,
            "name": machine.name,
            "numa-mem-supported": False,
            "default-cpu-type": machine.default_cpu_type,
            "acpi": False,
            "cpu-max": machine.cpu_max,
            "deprecated": False,
            "default-ram-id": machine.default_ram_id,
        }
        if machine.is_default:
            entry["is-default"] = True
        if machine.alias is not None:
            entry["alias"] = machine.alias
        found.append(entry)
    return found


@command("query-block")
def _query_block(session: QmpSession, _arguments: dict) -> list:
    found = []
    for block in session.target.blocks():
        found.append(
            {
                "io-status": "ok",
                "device": block.device,
                "locked": False,
                "removable": block.removable,
                "inserted": {
                    "ro": block.read_only,
                    "drv": block.driver,
                    "encrypted": False,
                    "file": block.filename,
                    "image": {
                        "virtual-size": block.size,
                        "filename": block.filename,
                        "format": block.driver,
                    },
                    "node-name": block.device,
                    "backing_file_depth": 0,
                    "write_threshold": 0,
                    "detect_zeroes": "off",
                    "cache": {"no-flush": False, "direct": False, "writeback": True},
                    "bps": 0,
                    "bps_rd": 0,
                    "bps_wr": 0,
                    "iops": 0,
                    "iops_rd": 0,
                    "iops_wr": 0,
                },
                "qdev": block.qdev,
                "type": "unknown",
            }
        )
    return found


@command("query-chardev")
def _query_chardev(session: QmpSession, _arguments: dict) -> list:
    return [
        {"frontend-open": True, "filename": filename, "label": label}
        for label, filename in session.target.chardevs()
    ]


@command("stop")
def _stop(session: QmpSession, _arguments: dict) -> dict:
    session.target.pause()
    return {}


@command("cont")
def _cont(session: QmpSession, _arguments: dict) -> dict:
    if session.target.run_state == "shutdown":
        raise QmpError("Resetting the Virtual Machine is required")
    session.target.resume()
    return {}


@command("system_reset")
def _system_reset(session: QmpSession, _arguments: dict) -> dict:
    session.target.reset("host-qmp-system-reset")
    return {}


@command("system_powerdown")
def _system_powerdown(session: QmpSession, _arguments: dict) -> dict:
    session.target.powerdown()
    return {}


@command("quit")
def _quit(session: QmpSession, _arguments: dict) -> dict:
    # QEMU answers first, then shuts down: the reply must reach the client before the socket
    # closes.
    reply: dict = {"return": {}}
    if session.has_id:
        reply["id"] = session.request_id  # clients match replies by it (qemu.qmp does)
    session.send(reply)
    session.target.quit("host-qmp-quit")
    raise AlreadyAnswered


@command("human-monitor-command", required=("command-line",), optional=("cpu-index",))
def _human_monitor_command(session: QmpSession, arguments: dict) -> str:
    line = arguments["command-line"]
    if not isinstance(line, str):
        raise QmpError("Invalid parameter type for 'command-line', expected: string")
    cpu_index = arguments.get("cpu-index", 0)
    return session.hmp.run(line, cpu_index=cpu_index)


# --- networking (system/net/clients.py) ---------------------------------------------------
@command("netdev_add", required=("id", "type"), optional=QMP_NETDEV_KEYS)
def _netdev_add(session: QmpSession, arguments: dict) -> dict:
    network = getattr(session.target, "network", None)  # None: a target without networking
    try:
        text = netdev_text(arguments)
        if network is None:
            raise NetClientError("No network")
        network.netdev_add(text)
    except DuplicateNetdev as exc:
        raise QmpError(str(exc).removesuffix(" for netdev")) from None  # QMP's shorter words
    except NetClientError as exc:
        raise QmpError(str(exc)) from None
    return {}


@command("netdev_del", required=("id",))
def _netdev_del(session: QmpSession, arguments: dict) -> dict:
    network = getattr(session.target, "network", None)
    netdev_id = arguments["id"]
    if not isinstance(netdev_id, str):
        raise QmpError("Invalid parameter type for 'id', expected: string")
    try:
        if network is None:
            raise NetClientError(f"Device '{netdev_id}' not found")
        network.netdev_del(netdev_id)
    except NetClientError as exc:
        raise QmpError(str(exc), "DeviceNotFound") from None
    return {}
