"""What a monitor may see and do of a machine, and the events it reports.

The machine implements `MonitorTarget`; QMP and HMP only call it. Monitors run on their own host
threads (a socket server, a terminal reader), so every method must be safe to call from another
thread than the one running the vCPUs: a request such as `pause` is recorded and honoured by the
run loop between two slices, and returns once it has taken effect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from qemuser.system.net.clients import NetClients

# The version a monitor reports: qemuser follows QEMU 7.2's interfaces (its QMP schema, HMP's
# command set), so clients that check QEMU's version see the one whose behaviour they get.
QEMU_VERSION = (7, 2, 0)
PACKAGE = "qemuser"


@dataclass(frozen=True)
class CpuInfo:
    """One vCPU as query-cpus-fast and `info cpus` show it."""

    index: int
    thread_id: int
    target: str  # "aarch64", "riscv64"
    qom_type: str  # e.g. "cortex-a72-arm-cpu", "rv64-riscv-cpu"
    pc: int
    halted: bool = False

    @property
    def qom_path(self) -> str:
        return f"/machine/unattached/device[{self.index}]"


@dataclass(frozen=True)
class BlockInfo:
    """One block backend as query-block and `info block` show it."""

    device: str  # the -drive id or the generated name (virtio0, pflash0, ...)
    qdev: str
    filename: str
    driver: str  # "raw", "qcow2"
    read_only: bool
    size: int
    removable: bool = False


@dataclass(frozen=True)
class MachineInfo:
    """One machine type as query-machines lists it."""

    name: str
    alias: str | None
    is_default: bool
    cpu_max: int
    default_cpu_type: str
    default_ram_id: str


class MonitorTarget(Protocol):
    """The machine as the monitors drive it."""

    events: EventBus

    @property
    def name(self) -> str | None: ...  # -name, or None
    @property
    def run_state(self) -> str: ...  # QEMU's RunState names: prelaunch, running, paused, shutdown
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def reset(self, reason: str) -> None: ...  # reason: RESET's "reason" (host-qmp-system-reset)
    def powerdown(self) -> None: ...  # the guest's power button
    def quit(self, reason: str) -> None: ...  # SHUTDOWN's reason (host-qmp-quit, host-ui)
    def cpus(self) -> list[CpuInfo]: ...
    def blocks(self) -> list[BlockInfo]: ...
    def register_dump(self, cpu_index: int) -> str: ...  # `info registers`
    def read_memory(self, addr: int, size: int, physical: bool, cpu_index: int) -> bytes: ...
    def memory_tree(self) -> str: ...  # `info mtree`
    def device_tree(self) -> str: ...  # `info qtree`
    def chardevs(self) -> list[tuple[str, str]]: ...  # (label, filename)
    def disassemble(self, addr: int, count: int, cpu_index: int) -> list[str]: ...
    def machines(self) -> list[MachineInfo]: ...  # query-machines, -M help
    # savevm/loadvm/delvm/info snapshots (system/snapshot.py); failures raise SnapshotError
    def savevm(self, name: str | None) -> None: ...
    def loadvm(self, name: str) -> None: ...
    def delvm(self, name: str) -> None: ...
    def snapshot_info(self) -> str: ...

    # the network clients (system/net/clients.py), for info network, hostfwd_*, netdev_*;
    # a target without one (a test double) answers as a machine without networking
    network: NetClients | None


@dataclass
class EventBus:
    """QMP events, timestamped as QEMU does (wall clock, seconds + microseconds), handed to every
    subscribed session."""

    _subscribers: list[Callable[[dict], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, deliver: Callable[[dict], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(deliver)

        def unsubscribe() -> None:
            with self._lock:
                if deliver in self._subscribers:
                    self._subscribers.remove(deliver)

        return unsubscribe

    def emit(self, name: str, data: dict | None = None) -> None:
        now = time.time_ns() // 1000
        event: dict = {
            "timestamp": {"seconds": now // 1_000_000, "microseconds": now % 1_000_000},
            "event": name,
        }
        if data is not None:
            event["data"] = data
        with self._lock:
            subscribers = list(self._subscribers)
        for deliver in subscribers:
            deliver(event)
