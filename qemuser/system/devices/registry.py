"""The device registry: every device model declares its name, bus, category and properties as
class data, and registers itself with a decorator; `-device help`, `-device NAME,help` and the
devices `-device` can create are all read from here, so adding a device is one new file.

Two kinds of entry:

- board devices (`@board_device`): built into a board's declaration, listed by `-device help`
  but refused by `-device` (QEMU's "cannot be added to machine");
- pluggable devices (`@pluggable`): created from a `-device` option by `from_options`, and put
  on a bus that a board device provides (virtio-mmio transports provide `virtio-bus`).

`load_all()` imports every module of `qemuser.system.devices` and `qemuser.system.virtio`, so a
new module registers itself without an entry anywhere else.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple, Protocol, TypeVar

from qemuser.system.devices.base import Device
from qemuser.system.drive import Drive


class DeviceOptionError(Exception):
    """A bad -drive/-blockdev/-device/-global: reported as one line."""


def on_off(value: str, what: str) -> bool:
    """A QemuOpts boolean (on/off, yes/no, true/false)."""
    if value in ("on", "yes", "true"):
        return True
    if value in ("off", "no", "false"):
        return False
    raise DeviceOptionError(f"Parameter '{what}' expects 'on' or 'off'")


class Property(NamedTuple):
    """One `-device NAME,prop=value` property, as `-device NAME,help` lists it."""

    name: str
    type: str
    help: str


class PlugContext(Protocol):
    """What a pluggable device's constructor may ask of the device plan being built."""

    board_name: str

    def claim_drive(self, name: str | None, option: str) -> Drive: ...

    def planned(self) -> list[Pluggable]: ...


class Pluggable(Protocol):
    """The class data and constructor of a device `-device` can create."""

    model: ClassVar[str]  # the -device name, as QEMU spells it
    bus: ClassVar[str]  # the bus it plugs into ("virtio-bus", "virtio-serial-bus")
    category: ClassVar[str]  # QEMU's device category, without " devices"
    description: ClassVar[str]
    properties: ClassVar[tuple[Property, ...]]

    @classmethod
    def from_options(cls, opts: dict[str, str], plan: PlugContext, option: str) -> Pluggable | None:
        """A device from parsed `-device` properties (known ones only; checked before); None
        when the option changes a device already planned instead (a port on its bus)."""
        ...


# QEMU's categories, in the order `-device help` prints them (qdev-monitor.c).
CATEGORIES = (
    "Controller/Bridge/Hub",
    "USB",
    "Storage",
    "Network",
    "Input",
    "Display",
    "Sound",
    "Misc",
    "CPU",
    "Watchdog",
    "Uncategorized",
)

BOARD_DEVICES: dict[str, type[Device]] = {}
PLUGGABLE: dict[str, type[Pluggable]] = {}

D = TypeVar("D", bound=type[Device])
P = TypeVar("P")


def board_device(cls: D) -> D:
    """Register a device built into boards under its `kind`."""
    BOARD_DEVICES[cls.kind] = cls
    return cls


def pluggable(cls: P) -> P:
    """Register a device `-device` can create under its `model`."""
    model: type[Pluggable] = cls  # type: ignore[assignment]
    if model.category not in CATEGORIES:
        raise ValueError(f"{model.model}: unknown device category {model.category!r}")
    PLUGGABLE[model.model] = model
    return cls


_loaded = False


def load_all() -> None:
    """Import every device module once, so that each registers itself."""
    global _loaded
    if _loaded:
        return
    # Imported here: only -device and its help need the walk, a plain boot does not.
    import importlib
    import pkgutil

    import qemuser.system.devices
    import qemuser.system.virtio

    for package in (qemuser.system.devices, qemuser.system.virtio):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
    _loaded = True


def device_help() -> str:
    """`-device help`: pluggable devices by category (names sorted, as QEMU lists them), then
    the board devices."""
    load_all()
    lines: list[str] = []
    for category in CATEGORIES:
        models = sorted(m for m, cls in PLUGGABLE.items() if cls.category == category)
        if not models:
            continue
        lines.append(f"{category} devices:")
        for name in models:
            cls = PLUGGABLE[name]
            lines.append(f'name "{name}", bus {cls.bus}, desc "{cls.description}"')
        lines.append("")
    lines.append("Devices built into the boards (not pluggable with -device):")
    for name in sorted(BOARD_DEVICES):
        lines.append(f'name "{name}", desc "{BOARD_DEVICES[name].description}"')
    return "\n".join(lines)


def model_help(name: str) -> str | None:
    """`-device NAME,help`: a pluggable device's properties, a board device's description, or
    None for a name nobody registered."""
    load_all()
    model = PLUGGABLE.get(name)
    if model is not None:
        lines = [f"{name} options:"]
        for prop in model.properties:
            lines.append(f"  {prop.name}=<{prop.type}>".ljust(25) + f"- {prop.help}")
        if not model.properties:
            lines.append("  (no properties)")
        return "\n".join(lines)
    device = BOARD_DEVICES.get(name)
    if device is not None:
        return f"{name}: {device.description}"
    return None


def lookup(name: str, option: str, board_name: str) -> type[Pluggable]:
    """The pluggable model `-device NAME` names; DeviceOptionError in QEMU's words if none."""
    load_all()
    model = PLUGGABLE.get(name)
    if model is not None:
        return model
    if name in BOARD_DEVICES:
        raise DeviceOptionError(
            f"{option}: device '{name}' cannot be added to machine '{board_name}'"
        )
    raise DeviceOptionError(f"{option}: '{name}' is not a valid device model name")
