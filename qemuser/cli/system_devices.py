"""QEMU's -drive, -blockdev and -device for the virtio-mmio devices of the virt boards.

Option strings follow QEMU's QemuOpts syntax (`key=value,...`, `,,` for a literal comma, a bare
`key` meaning `key=on`). Errors read like QEMU's: the option as given, then what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qemuser.system.devices import DEVICE_TYPES
from qemuser.system.virtio import (
    BlockBackend,
    VirtioBlk,
    VirtioConsole,
    VirtioDevice,
    VirtioMmio,
    VirtioRng,
)


class DeviceOptionError(Exception):
    """A bad -drive/-blockdev/-device: reported as one line."""


def parse_opts(text: str, implied: str | None = None) -> dict[str, str]:
    """Split `a=1,b=x,,y,flag` into {'a': '1', 'b': 'x,y', 'flag': 'on'}.

    With `implied`, a first item without '=' is the value of that key (-device's driver name).
    """
    items: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                current += ","
                i += 2
                continue
            items.append(current)
            current = ""
        else:
            current += text[i]
        i += 1
    items.append(current)
    opts: dict[str, str] = {}
    for n, item in enumerate(items):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            if n == 0 and implied is not None:
                key, value = implied, item
            else:
                value = "on"
        opts[key] = value
    return opts


def _on_off(value: str, what: str) -> bool:
    if value in ("on", "yes", "true"):
        return True
    if value in ("off", "no", "false"):
        return False
    raise DeviceOptionError(f"Parameter '{what}' expects 'on' or 'off'")


# Image formats QEMU knows; only raw is implemented here.
_KNOWN_FORMATS = {"raw", "qcow2", "qcow", "vmdk", "vdi", "vhdx", "vpc", "qed", "luks", "dmg"}
_KNOWN_INTERFACES = {"ide", "scsi", "sd", "mtd", "floppy", "pflash", "virtio", "none", "xen"}
# -drive keys accepted and ignored: they tune the host side only (caching, AIO).
_IGNORED_DRIVE_KEYS = {"cache", "aio", "discard", "detect-zeroes", "werror", "rerror", "media"}


@dataclass
class Drive:
    """A block backend from -drive or -blockdev, and whether a device took it."""

    name: str  # the -drive id= or -blockdev node-name=
    backend: BlockBackend | None
    option: str  # the option as given, for messages
    interface: str = "none"  # -drive if=; "none" for -blockdev
    used: bool = False


@dataclass
class DevicePlan:
    """What the command line asks to plug into the board's virtio-mmio slots, in QEMU's order."""

    devices: list[tuple[str, VirtioDevice]] = field(default_factory=list)
    drives: dict[str, Drive] = field(default_factory=dict)

    def plug_into(self, banks: list[VirtioMmio]) -> None:
        """Plug every planned device into the first bank's free slots (highest first)."""
        for option, device in self.devices:
            for bank in banks:
                try:
                    bank.plug(device)
                    break
                except ValueError:
                    continue
            else:
                raise DeviceOptionError(
                    f"-device {option}: No 'virtio-mmio-bus' bus found for device '{device.model}'"
                )


def _open(path: str, read_only: bool, option: str, snapshot: bool = False) -> BlockBackend:
    try:
        return BlockBackend(path, read_only=read_only, snapshot=snapshot)
    except OSError as exc:
        raise DeviceOptionError(f"{option}: Could not open '{path}': {exc.strerror}") from None


def parse_drive(
    text: str, index: int, warn: Callable[[str], None], snapshot: bool = False
) -> Drive:
    """One -drive; `snapshot` is the command line's -snapshot (a drive's own snapshot= wins)."""
    option = f"-drive {text}"
    opts = parse_opts(text)
    for key in opts:
        if key not in {"file", "format", "if", "id", "readonly", "index", "snapshot"} | (
            _IGNORED_DRIVE_KEYS
        ):
            raise DeviceOptionError(
                f"{option}: Block format 'raw' does not support the option '{key}'"
            )
    interface = opts.get("if", "virtio")  # the virt boards' default block interface
    if interface not in _KNOWN_INTERFACES:
        raise DeviceOptionError(f"{option}: unsupported bus type '{interface}'")
    if interface not in ("virtio", "none"):
        raise DeviceOptionError(
            f"{option}: machine type does not support if={interface},bus=0,unit={index}"
        )
    fmt = opts.get("format")
    if fmt is not None and fmt not in _KNOWN_FORMATS:
        raise DeviceOptionError(f"{option}: Unknown driver '{fmt}'")
    if fmt is not None and fmt != "raw":
        raise DeviceOptionError(f"{option}: format '{fmt}' is not supported (only raw)")
    try:
        read_only = _on_off(opts.get("readonly", "off"), "read-only")
    except DeviceOptionError as exc:
        raise DeviceOptionError(f"{option}: {exc}") from None
    path = opts.get("file")
    backend = None
    if path:
        try:
            snapshot = _on_off(opts.get("snapshot", "on" if snapshot else "off"), "snapshot")
        except DeviceOptionError as exc:
            raise DeviceOptionError(f"{option}: {exc}") from None
        backend = _open(path, read_only, option, snapshot)
        if fmt is None:
            warn(
                f"WARNING: Image format was not specified for '{path}' and probing guessed raw.\n"
                "         Automatically detecting the format is dangerous for raw images, "
                "write operations on block 0 will be restricted.\n"
                "         Specify the 'raw' format explicitly to remove the restrictions."
            )
    elif interface == "virtio":
        raise DeviceOptionError(f"{option}: Device needs media, but drive is empty")
    name = opts.get("id", f"{interface}{index}")
    return Drive(name=name, backend=backend, option=option, interface=interface)


def parse_blockdev(text: str, nodes: dict[str, Drive]) -> Drive:
    """`-blockdev driver=file,filename=F,node-name=N` or `driver=raw,file=N|file.filename=F`."""
    option = f"-blockdev {text}"
    opts = parse_opts(text)
    driver = opts.get("driver")
    if driver is None:
        raise DeviceOptionError(f"{option}: Parameter 'driver' is missing")
    if driver not in ("file", "raw"):
        if driver in _KNOWN_FORMATS or driver in ("host_device", "nbd", "null-co"):
            raise DeviceOptionError(f"{option}: driver '{driver}' is not supported")
        raise DeviceOptionError(f"{option}: Parameter 'driver' does not accept value '{driver}'")
    name = opts.get("node-name")
    if not name:
        raise DeviceOptionError(f"{option}: 'node-name' must be specified for the root node")
    if name in nodes:
        raise DeviceOptionError(f"{option}: Duplicate nodes with node-name='{name}'")
    try:
        read_only = _on_off(opts.get("read-only", "off"), "read-only")
    except DeviceOptionError as exc:
        raise DeviceOptionError(f"{option}: {exc}") from None
    if driver == "file":
        path = opts.get("filename")
        if not path:
            raise DeviceOptionError(f"{option}: Parameter 'filename' is missing")
        return Drive(name=name, backend=_open(path, read_only, option), option=option)
    child = opts.get("file")
    if child is not None:
        below = nodes.get(child)
        if below is None:
            raise DeviceOptionError(
                f"{option}: Cannot find device='{child}' nor node-name='{child}'"
            )
        return Drive(name=name, backend=below.backend, option=option)
    path = opts.get("file.filename")
    if opts.get("file.driver", "file") != "file" or not path:
        raise DeviceOptionError(f"{option}: Parameter 'file' is missing")
    return Drive(name=name, backend=_open(path, read_only, option), option=option)


@dataclass(frozen=True)
class DeviceModel:
    name: str
    bus: str
    category: str
    description: str
    properties: tuple[tuple[str, str, str], ...]  # (name, type, help)


DEVICE_MODELS: tuple[DeviceModel, ...] = (
    DeviceModel(
        "virtio-blk-device",
        "virtio-bus",
        "Storage devices",
        VirtioBlk.description,
        (
            ("drive", "str", "Node name or ID of a block device to use as a backend"),
            ("serial", "str", "disk serial number reported by VIRTIO_BLK_T_GET_ID"),
        ),
    ),
    DeviceModel("virtio-rng-device", "virtio-bus", "Misc devices", VirtioRng.description, ()),
    DeviceModel(
        "virtio-serial-device",
        "virtio-bus",
        "Input devices",
        VirtioConsole.description,
        (),
    ),
    DeviceModel(
        "virtconsole",
        "virtio-serial-bus",
        "Input devices",
        "Virtio console port (hvc0), on the serial backend",
        (("chardev", "str", "ID of a chardev to use as a backend (only the -serial one)"),),
    ),
)
DEVICE_MODELS_BY_NAME = {m.name: m for m in DEVICE_MODELS}


def device_help() -> str:
    lines: list[str] = []
    for category in dict.fromkeys(m.category for m in DEVICE_MODELS):
        lines.append(f"{category}:")
        for m in DEVICE_MODELS:
            if m.category == category:
                lines.append(f'name "{m.name}", bus {m.bus}, desc "{m.description}"')
        lines.append("")
    lines.append("Devices built into the boards (not pluggable with -device):")
    for d in DEVICE_TYPES:
        lines.append(f'name "{d.kind}", desc "{d.description}"')
    return "\n".join(lines)


def property_help(name: str) -> str:
    model = DEVICE_MODELS_BY_NAME[name]
    lines = [f"{name} options:"]
    for prop, kind, text in model.properties:
        lines.append(f"  {prop}=<{kind}>".ljust(25) + f"- {text}")
    if not model.properties:
        lines.append("  (no properties)")
    return "\n".join(lines)


def check_globals(settings: list[str]) -> None:
    """-global DRIVER.PROP=VALUE: only virtio-mmio.force-legacy=off, which is what we model.

    QEMU's virtio-mmio defaults to the legacy (version 1) registers; ours are always the
    version 2 ones, so a command line asking QEMU for those works unchanged here.
    """
    for setting in settings:
        prop, _, value = setting.partition("=")
        if prop != "virtio-mmio.force-legacy":
            raise DeviceOptionError(f"-global {setting}: property not supported")
        try:
            legacy = _on_off(value, "force-legacy")
        except DeviceOptionError as exc:
            raise DeviceOptionError(f"-global {setting}: {exc}") from None
        if legacy:
            raise DeviceOptionError(
                f"-global {setting}: legacy virtio-mmio (version 1) is not supported"
            )


def plan_devices(
    drives: list[str],
    blockdevs: list[str],
    devices: list[str],
    board_name: str,
    warn: Callable[[str], None],
    snapshot: bool = False,
) -> DevicePlan:
    """Open the images and decide the devices; raises DeviceOptionError on bad input."""
    plan = DevicePlan()
    for text in blockdevs:
        node = parse_blockdev(text, plan.drives)
        plan.drives[node.name] = node
    virtio_drives: list[Drive] = []
    for index, text in enumerate(drives):
        drive = parse_drive(text, index, warn, snapshot)
        if drive.name in plan.drives:
            raise DeviceOptionError(f"-drive {text}: Duplicate ID '{drive.name}' for drive")
        plan.drives[drive.name] = drive
        if drive.interface == "virtio":
            drive.used = True
            virtio_drives.append(drive)
    serial_ports: list[VirtioConsole] = []
    built_in = {d.kind for d in DEVICE_TYPES}
    for text in devices:
        opts = parse_opts(text, implied="driver")
        name = opts.pop("driver", "")
        option = f"-device {text}"
        if name not in DEVICE_MODELS_BY_NAME:
            if name in built_in:
                raise DeviceOptionError(
                    f"{option}: device '{name}' cannot be added to machine '{board_name}'"
                )
            raise DeviceOptionError(f"{option}: '{name}' is not a valid device model name")
        allowed = {p for p, _, _ in DEVICE_MODELS_BY_NAME[name].properties}
        for key in opts:
            if key not in allowed:
                raise DeviceOptionError(f"{option}: Property '{name}.{key}' not found")
        if name == "virtio-blk-device":
            drive = _claim_drive(plan, opts.get("drive"), option)
            plan.devices.append((text, _blk(drive, opts.get("serial", ""))))
        elif name == "virtio-rng-device":
            plan.devices.append((text, VirtioRng()))
        elif name == "virtio-serial-device":
            console = VirtioConsole()
            serial_ports.append(console)
            plan.devices.append((text, console))
        else:  # virtconsole: the one port of the newest virtio-serial-device
            if not serial_ports:
                raise DeviceOptionError(
                    f"{option}: No 'virtio-serial-bus' bus found for device 'virtconsole'"
                )
            if serial_ports[-1].connected:
                raise DeviceOptionError(
                    f"{option}: only one virtconsole per virtio-serial-device is supported"
                )
            serial_ports[-1].connected = True
    # QEMU turns if=virtio drives into devices after the -device options.
    for drive in virtio_drives:
        plan.devices.append((f"virtio-blk-device,drive={drive.name}", _blk(drive, "")))
    return plan


def _claim_drive(plan: DevicePlan, name: str | None, option: str) -> Drive:
    if not name:
        raise DeviceOptionError(f"{option}: drive property not set")
    drive = plan.drives.get(name)
    if drive is None:
        raise DeviceOptionError(
            f"{option}: Property 'virtio-blk-device.drive' can't find value '{name}'"
        )
    if drive.interface == "virtio":
        # QEMU plugs -device options first, then finds its if=virtio drive taken.
        raise DeviceOptionError(
            f"{drive.option}: Drive '{name}' is already in use because it has been "
            "automatically connected to another device (did you need 'if=none' in the drive "
            "options?)"
        )
    if drive.used:
        raise DeviceOptionError(f"{option}: Drive '{name}' is already in use by another device")
    if drive.backend is None:
        raise DeviceOptionError(f"{option}: Device needs media, but drive is empty")
    drive.used = True
    return drive


def _blk(drive: Drive, serial: str) -> VirtioBlk:
    assert drive.backend is not None
    return VirtioBlk(drive.backend, serial=serial)
