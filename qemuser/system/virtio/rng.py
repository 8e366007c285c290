"""virtio-rng (virtio 1.1 section 5.4): entropy from the host."""

from __future__ import annotations

import os

from qemuser.system.devices.registry import PlugContext, pluggable
from qemuser.system.virtio.transport import VirtioDevice


@pluggable
class VirtioRng(VirtioDevice):
    """virtio-rng: every device-writable buffer is filled from the host's os.urandom."""

    model = "virtio-rng-device"
    category = "Misc"
    description = "Virtio random number generator"
    device_id = 4
    num_queues = 1

    @classmethod
    def from_options(cls, opts: dict[str, str], plan: PlugContext, option: str) -> VirtioRng:
        return cls()

    def notify(self, queue_index: int) -> None:
        transport = self.transport
        assert transport is not None
        served = False
        while (chain := transport.pop(queue_index)) is not None:
            length = chain.writable_length()
            chain.write(transport.host, 0, os.urandom(length))
            transport.push(queue_index, chain, length)
            served = True
        if served:
            transport.interrupt()
