"""virtio-net (virtio 1.1 section 5.1): an Ethernet NIC on a `-netdev` backend.

Features offered: MAC (the address in config space), STATUS (link up), MRG_RXBUF (a received
frame may span several of the driver's buffers). No checksum or segmentation offload: every
frame is a whole Ethernet frame with a zero virtio-net header, which is what both directions of
libslirp and the socket backend need.

Received frames come from a backend thread; they are queued and handed to the machine's thread
(`post_io`), which alone writes guest memory and raises the interrupt.
"""

from __future__ import annotations

import struct
import threading
from collections import deque

from qemuser.system.devices.registry import DeviceOptionError, PlugContext, Property, pluggable
from qemuser.system.net.backend import NetBackend
from qemuser.system.net.netdev import mac_address
from qemuser.system.net.slirp import NetdevError
from qemuser.system.virtio.transport import VirtioDevice

F_MAC, F_MRG_RXBUF, F_STATUS = 1 << 5, 1 << 15, 1 << 16
STATUS_LINK_UP = 1
# struct virtio_net_hdr_v1 (include/uapi/linux/virtio_net.h): u8 flags, u8 gso_type,
# le16 hdr_len, le16 gso_size, le16 csum_start, le16 csum_offset, le16 num_buffers
NET_HDR = struct.Struct("<BBHHHHH")
RX_QUEUE, TX_QUEUE = 0, 1
# Frames kept while the driver has no receive buffers (then the oldest go): as many as QEMU's
# net queue holds (nq_maxlen), so that a burst libslirp sends within the guest's TCP window
# waits instead of being dropped and retransmitted.
MAX_PENDING = 10000


@pluggable
class VirtioNet(VirtioDevice):
    model = "virtio-net-device"
    category = "Network"
    description = "Virtio network device"
    properties = (
        Property("netdev", "str", "ID of a netdev to use as a backend"),
        Property("mac", "str", "Ethernet 6-byte MAC Address, example: 52:54:00:12:34:56"),
    )
    device_id = 1
    num_queues = 2

    def __init__(self, backend: NetBackend, mac: bytes) -> None:
        super().__init__()
        self.backend = backend
        self.mac = mac
        self.default_mac = False  # True when QEMU's default pattern chose `mac`
        self.link_up = True
        self._pending: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._started = False
        self.frames_in = self.frames_out = 0

    @classmethod
    def from_options(cls, opts: dict[str, str], plan: PlugContext, option: str) -> VirtioNet:
        name = opts.get("netdev")
        claim = getattr(plan, "claim_netdev", None)
        if not name or claim is None:
            # QEMU gives such a NIC no backend: it works but carries nothing.
            backend = NetBackend(f"{option}: unconnected")
        else:
            backend = claim(name, option)
        # QEMU's default MACs count only the NICs that took one (qemu_macaddr_default_if_unset)
        index = sum(
            isinstance(inner := getattr(d, "virtio", d), VirtioNet) and inner.default_mac
            for d in plan.planned()
        )
        try:
            mac = mac_address(opts.get("mac"), index, option)
        except NetdevError as exc:
            raise DeviceOptionError(str(exc)) from None
        device = cls(backend, mac)
        device.default_mac = "mac" not in opts
        return device

    def features(self) -> int:
        return F_MAC | F_STATUS | F_MRG_RXBUF

    def config(self) -> bytes:
        # struct virtio_net_config: u8 mac[6], le16 status, le16 max_virtqueue_pairs
        status = STATUS_LINK_UP if self.link_up else 0
        return self.mac + struct.pack("<HH", status, 1)

    def start(self) -> None:
        """Connect the backend (once the machine exists, so that frames can be posted); a
        machine rebuilt by system_reset re-plugs this device, whose backend keeps running."""
        if not self._started:
            self._started = True
            self.backend.start(self._from_backend)

    def _from_backend(self, frame: bytes) -> None:
        """A backend thread: queue the frame, have the machine's thread deliver it."""
        with self._lock:
            self._pending.append(frame)
            while len(self._pending) > MAX_PENDING:
                self._pending.popleft()
            if self._scheduled:
                return
            self._scheduled = True
        transport = self.transport
        post = getattr(transport.host, "post_io", None) if transport is not None else None
        if post is None:
            with self._lock:
                self._scheduled = False
            return
        post(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            self._scheduled = False
        transport = self.transport
        if transport is None or not transport.ready() or not self.link_up:
            return
        delivered = False
        while True:
            with self._lock:
                if not self._pending:
                    break
                frame = self._pending[0]
            if not self._receive(frame):
                break  # no buffers: wait for the driver to add some (notify on RX)
            with self._lock:
                self._pending.popleft()
            delivered = True
        if delivered:
            transport.interrupt()

    def _receive(self, frame: bytes) -> bool:
        """One frame into as many receive buffers as it needs; False when there are too few."""
        transport = self.transport
        assert transport is not None
        data = NET_HDR.pack(0, 0, 0, 0, 0, 0, 1) + frame
        chains = []
        room = 0
        queue = transport.queues[RX_QUEUE]
        saved = queue.last_avail
        while room < len(data):
            chain = transport.pop(RX_QUEUE)
            if chain is None:
                queue.last_avail = saved  # give the chains back: the frame waits
                return False
            chains.append(chain)
            room += chain.writable_length()
        if len(chains) > 1:
            data = NET_HDR.pack(0, 0, 0, 0, 0, 0, len(chains)) + frame
        offset = 0
        for chain in chains:
            part = data[offset : offset + chain.writable_length()]
            chain.write(transport.host, 0, part)
            transport.push(RX_QUEUE, chain, len(part))
            offset += len(part)
        self.frames_in += 1
        return True

    def notify(self, queue_index: int) -> None:
        transport = self.transport
        assert transport is not None
        if queue_index == RX_QUEUE:
            self._deliver()  # new buffers: frames that waited can go now
            return
        sent = False
        while (chain := transport.pop(TX_QUEUE)) is not None:
            packet = chain.read(transport.host)
            frame = packet[NET_HDR.size :]
            if frame and self.link_up:
                self.backend.send(frame)
                self.frames_out += 1
            transport.push(TX_QUEUE, chain, 0)
            sent = True
        if sent:
            transport.interrupt()

    def set_link(self, up: bool) -> None:
        """HMP set_link: the status field changes and the driver is told (config change)."""
        self.link_up = up
        transport = self.transport
        if transport is not None:
            transport.config_generation += 1
            transport.interrupt_status |= 2
            transport.set_line(True)
