"""virtio-net without a CPU: frames the driver queues on TX reach the backend, frames from the
backend fill the driver's RX buffers (one, or several with MRG_RXBUF) with the v1 header, and
wait while the driver has no buffers. Config space holds QEMU's default MAC."""

from __future__ import annotations

import struct

from qemuser.system.devices.base import NullHost
from qemuser.system.net.backend import NetBackend
from qemuser.system.net.netdev import mac_address
from qemuser.system.virtio.net import VirtioNet
from qemuser.system.virtio.transport import VirtioTransport

RAM = 0x4000_0000


class Host(NullHost):
    def __init__(self) -> None:
        super().__init__()
        self.ram = bytearray(1 << 20)
        self.posted = []

    def dma_read(self, addr: int, size: int) -> bytes:
        return bytes(self.ram[addr - RAM : addr - RAM + size])

    def dma_write(self, addr: int, data: bytes) -> None:
        self.ram[addr - RAM : addr - RAM + len(data)] = data

    def post_io(self, callback) -> None:
        self.posted.append(callback)

    def run_posted(self) -> None:
        while self.posted:
            self.posted.pop(0)()


class Recorder(NetBackend):
    def __init__(self) -> None:
        super().__init__("n0")
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)


QUEUE = {
    0: (RAM + 0x0000, RAM + 0x1000, RAM + 0x2000),
    1: (RAM + 0x3000, RAM + 0x4000, RAM + 0x5000),
}


def ready_device() -> tuple[VirtioNet, VirtioTransport, Host, Recorder]:
    host, backend = Host(), Recorder()
    net = VirtioNet(backend, mac_address(None, 0, "-device"))
    transport = VirtioTransport(base=0, irq=5)
    transport.host = host
    transport.plug(net)
    transport.write(0x070, 4, 1 | 2)
    transport.write(0x024, 4, 1)
    transport.write(0x020, 4, 1)  # VERSION_1
    transport.write(0x024, 4, 0)
    transport.write(0x020, 4, 1 << 15)  # MRG_RXBUF
    transport.write(0x070, 4, 1 | 2 | 8)
    for index, (desc, avail, used) in QUEUE.items():
        transport.write(0x030, 4, index)
        transport.write(0x038, 4, 8)
        for reg, addr in ((0x080, desc), (0x090, avail), (0x0A0, used)):
            transport.write(reg, 4, addr)
        transport.write(0x044, 4, 1)
    transport.write(0x070, 4, 1 | 2 | 4 | 8)
    net.start()
    return net, transport, host, backend


def offer(host: Host, queue: int, buffers: list[tuple[int, int, bool]]) -> None:
    desc, avail, _ = QUEUE[queue]
    for i, (addr, length, writable) in enumerate(buffers):
        host.dma_write(desc + 16 * i, struct.pack("<QIHH", addr, length, 2 if writable else 0, 0))
    (idx,) = struct.unpack("<H", host.dma_read(avail + 2, 2))
    for i in range(len(buffers)):
        host.dma_write(avail + 4 + 2 * ((idx + i) % 8), struct.pack("<H", i))
    host.dma_write(avail + 2, struct.pack("<H", idx + len(buffers)))


def used(host: Host, queue: int) -> list[tuple[int, int]]:
    _, _, ring = QUEUE[queue]
    (idx,) = struct.unpack("<H", host.dma_read(ring + 2, 2))
    return [struct.unpack("<II", host.dma_read(ring + 4 + 8 * i, 8)) for i in range(idx)]


def test_config_has_qemus_default_mac_and_link_up():
    net, transport, _, _ = ready_device()
    assert transport.read(0x100, 4) == 0x1200_5452 and transport.read(0x104, 2) == 0x5634
    assert transport.read(0x106, 2) == 1  # VIRTIO_NET_S_LINK_UP
    assert mac_address(None, 2, "-device") == bytes.fromhex("525400123458")


def test_tx_frames_reach_the_backend():
    net, transport, host, backend = ready_device()
    frame = bytes(range(60))
    host.dma_write(RAM + 0x10000, bytes(12) + frame)
    offer(host, 1, [(RAM + 0x10000, 72, False)])
    transport.write(0x050, 4, 1)
    assert backend.sent == [frame]
    assert used(host, 1) == [(0, 0)]
    assert host.irqs[5] is True


def test_rx_frame_fills_one_buffer_with_the_v1_header():
    net, transport, host, _ = ready_device()
    offer(host, 0, [(RAM + 0x20000, 1526, True)])
    frame = b"\x52\x54\x00\x12\x34\x56" + bytes(range(100))
    net.backend.receive(frame)
    assert host.irqs.get(5) in (None, False)  # nothing yet: delivery is the machine thread's
    host.run_posted()
    assert used(host, 0) == [(0, 12 + len(frame))]
    header = struct.unpack("<BBHHHHH", host.dma_read(RAM + 0x20000, 12))
    assert header == (0, 0, 0, 0, 0, 0, 1)
    assert host.dma_read(RAM + 0x2000C, len(frame)) == frame
    assert host.irqs[5] is True


def test_rx_frame_spans_mergeable_buffers_and_waits_without_buffers():
    net, transport, host, _ = ready_device()
    frame = bytes(range(256)) * 4  # 1024 bytes: three 512-byte buffers with the header
    net.backend.receive(frame)
    host.run_posted()
    assert used(host, 0) == []  # no buffers yet: the frame waits
    offer(
        host,
        0,
        [(RAM + 0x30000, 512, True), (RAM + 0x30200, 512, True), (RAM + 0x30400, 512, True)],
    )
    transport.write(0x050, 4, 0)  # the driver notifies RX: the waiting frame goes now
    assert used(host, 0) == [(0, 512), (1, 512), (2, 12)]
    assert struct.unpack("<H", host.dma_read(RAM + 0x30000 + 10, 2)) == (3,)  # num_buffers
    assert (
        host.dma_read(RAM + 0x3000C, 500)
        + host.dma_read(RAM + 0x30200, 512)
        + host.dma_read(RAM + 0x30400, 12)
        == frame
    )
