"""virtio-console (virtio 1.1 section 5.3) with one port, and the virtconsole port option."""

from __future__ import annotations

import struct
from collections import deque

from qemuser.system.devices.registry import DeviceOptionError, PlugContext, Property, pluggable
from qemuser.system.virtio.transport import VirtioDevice


@pluggable
class VirtioConsole(VirtioDevice):
    """virtio-console with a single port (no VIRTIO_CONSOLE_F_MULTIPORT): receiveq0 and
    transmitq0. Linux makes it hvc0; output goes to the machine's serial backend once a
    `virtconsole` port is connected, input comes from `feed_input`."""

    model = "virtio-serial-device"
    category = "Input"
    description = "Virtio serial (console) device"
    device_id = 3
    num_queues = 2
    RX, TX = 0, 1

    def __init__(self) -> None:
        super().__init__()
        self.connected = False  # a virtconsole port is plugged: output reaches the host
        self.pending: deque[int] = deque()

    @classmethod
    def from_options(cls, opts: dict[str, str], plan: PlugContext, option: str) -> VirtioConsole:
        return cls()

    def config(self) -> bytes:
        # struct virtio_console_config: le16 cols, le16 rows, le32 max_nr_ports, le32 emerg_wr
        return struct.pack("<HHII", 0, 0, 1, 0)

    def feed_input(self, data: bytes) -> None:
        """Bytes typed on the host console, for the guest's hvc0."""
        if self.connected:
            self.pending.extend(data)
            self.notify(self.RX)

    def notify(self, queue_index: int) -> None:
        transport = self.transport
        if transport is None or not transport.ready():
            return
        served = False
        if queue_index == self.TX:
            while (chain := transport.pop(self.TX)) is not None:
                data = chain.read(transport.host)
                if self.connected:
                    transport.host.console_write(data)
                transport.push(self.TX, chain, 0)
                served = True
        elif queue_index == self.RX:
            while self.pending and (chain := transport.pop(self.RX)) is not None:
                take = min(chain.writable_length(), len(self.pending))
                data = bytes(self.pending.popleft() for _ in range(take))
                chain.write(transport.host, 0, data)
                transport.push(self.RX, chain, take)
                served = True
        if served:
            transport.interrupt()

    def reset(self) -> None:
        pass  # typed-ahead input survives a driver reset, as a terminal's would


@pluggable
class VirtConsole:
    """`-device virtconsole`: the one port of the newest virtio-serial-device, connected to the
    serial backend (no device of its own: it switches that device's output on)."""

    model = "virtconsole"
    bus = "virtio-serial-bus"
    category = "Input"
    description = "Virtio console port (hvc0), on the serial backend"
    properties = (
        Property("chardev", "str", "ID of a chardev to use as a backend (only the -serial one)"),
    )

    @classmethod
    def from_options(cls, opts: dict[str, str], plan: PlugContext, option: str) -> None:
        # A virtio-serial-pci proxy carries its virtio device as `virtio`.
        devices = [getattr(d, "virtio", d) for d in plan.planned()]
        ports = [d for d in devices if isinstance(d, VirtioConsole)]
        if not ports:
            raise DeviceOptionError(
                f"{option}: No 'virtio-serial-bus' bus found for device 'virtconsole'"
            )
        if ports[-1].connected:
            raise DeviceOptionError(
                f"{option}: only one virtconsole per virtio-serial-device is supported"
            )
        ports[-1].connected = True
