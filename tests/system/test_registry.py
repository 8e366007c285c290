"""The device registry and plan (no unicorn): a pluggable device declared in one class is listed
by -device help, created from -device options and plugged into a board's virtio-mmio bank; the
ARM generic timer's compare logic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest

from qemuser.system.devices import registry
from qemuser.system.devices.base import NullHost
from qemuser.system.devices.registry import (
    DeviceOptionError,
    PlugContext,
    Property,
    device_help,
    model_help,
    pluggable,
)
from qemuser.system.devices.timer.arm_generic import CTL, CVAL, TIMER_HZ, TVAL, GenericTimer
from qemuser.system.plug import DevicePlan
from qemuser.system.virtio.transport import DEVICE_ID, VirtioDevice, VirtioMmio


class Sample(VirtioDevice):
    """A device as a new file would declare it (registered per test, removed afterwards)."""

    model = "sample-device"
    category = "Misc"
    description = "A sample device"
    properties: ClassVar[tuple[Property, ...]] = (Property("colour", "str", "what colour"),)
    device_id = 42
    num_queues = 1

    def __init__(self, colour: str) -> None:
        super().__init__()
        self.colour = colour

    @classmethod
    def from_options(cls, opts: dict[str, str], plan: PlugContext, option: str) -> Sample:
        return cls(opts.get("colour", "grey"))


@pytest.fixture
def sample() -> Iterator[type[Sample]]:
    registry.load_all()
    pluggable(Sample)
    yield Sample
    del registry.PLUGGABLE[Sample.model]


def test_one_class_is_listed_created_and_plugged(sample: type[Sample]) -> None:
    lines = device_help().splitlines()
    misc = lines.index("Misc devices:")
    assert lines[misc + 1 : misc + 3] == [
        'name "sample-device", bus virtio-bus, desc "A sample device"',
        'name "virtio-rng-device", bus virtio-bus, desc "Virtio random number generator"',
    ]
    assert model_help("sample-device") == (
        "sample-device options:\n  colour=<str>           - what colour"
    )
    plan = DevicePlan("virt")
    plan.add_device("sample-device,colour=red", {"driver": "sample-device", "colour": "red"})
    with pytest.raises(DeviceOptionError, match=r"Property 'sample-device.size' not found"):
        plan.add_device("sample-device,size=1", {"driver": "sample-device", "size": "1"})
    bank = VirtioMmio(base=0x0A00_0000, count=2, stride=0x200, first_irq=16)
    bank.attach(NullHost())
    plan.plug_into([bank])
    (device,) = bank.plugged()
    assert isinstance(device, Sample) and device.colour == "red"
    assert bank.read(0x200 + DEVICE_ID, 4) == 42  # the highest slot, as QEMU


def test_board_devices_are_refused_and_unknown_names_rejected() -> None:
    plan = DevicePlan("virt")
    with pytest.raises(DeviceOptionError, match="^-device pl011: device 'pl011' cannot be added"):
        plan.add_device("pl011", {"driver": "pl011"})
    with pytest.raises(DeviceOptionError, match="'nosuch' is not a valid device model name"):
        plan.add_device("nosuch", {"driver": "nosuch"})
    assert model_help("arm_gic") == "arm_gic: ARM GICv2 interrupt controller"
    assert model_help("nosuch") is None


def test_a_full_bank_names_the_bus() -> None:
    plan = DevicePlan("virt")
    plan.add_device("virtio-rng-device", {"driver": "virtio-rng-device"})
    plan.add_device("virtio-rng-device", {"driver": "virtio-rng-device"})
    bank = VirtioMmio(base=0x0A00_0000, count=1, stride=0x200, first_irq=16)
    with pytest.raises(DeviceOptionError, match="No 'virtio-mmio-bus' bus found"):
        plan.plug_into([bank])


def test_generic_timer_tval_is_a_signed_offset_and_imask_holds_the_line() -> None:
    timer = GenericTimer()
    timer.write(TVAL, 0xFFFF_FFF0, now=1000)  # -16 ticks: already due
    assert timer.cval == 984
    timer.write(CTL, 1, now=1000)
    assert timer.condition(1000) and timer.firing(1000)
    timer.write(CTL, 3, now=1000)  # ENABLE | IMASK
    assert timer.condition(1000) and not timer.firing(1000)
    timer.write(CTL, 1, now=1000)
    timer.write(CVAL, 1000 + TIMER_HZ // 1000, now=1000)  # one millisecond ahead
    assert not timer.firing(1000)
    assert timer.ns_until(1000, limit_ns=10**9) == 1_000_000
    assert timer.ns_until(1000, limit_ns=5) == 5
    timer.write(CTL, 0, now=1000)
    assert timer.ns_until(1000, limit_ns=7) == 7
