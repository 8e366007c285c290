"""Parsing QEMU's -drive, -blockdev and -device options.

Option strings follow QEMU's QemuOpts syntax (`key=value,...`, `,,` for a literal comma, a bare
`key` meaning `key=on`). Errors read like QEMU's: the option as given, then what is wrong. What
the parsed options mean (which device, on which bus) is decided in qemuser/system/plug.py.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from qemuser.system.block.errors import BlockError
from qemuser.system.block.probe import open_image, probe, raw_probe_warning
from qemuser.system.devices.registry import DeviceOptionError, on_off
from qemuser.system.drive import BlockBackend, Drive
from qemuser.system.net.netdev import NetworkPlan, nic_device
from qemuser.system.plug import DevicePlan
from qemuser.system.qemuopts import split_commas


def parse_opts(text: str, implied: str | None = None) -> dict[str, str]:
    """Split `a=1,b=x,,y,flag` into {'a': '1', 'b': 'x,y', 'flag': 'on'}.

    With `implied`, a first item without '=' is the value of that key (-device's driver name).
    """
    items = split_commas(text)
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


# Image formats QEMU knows; raw and qcow2 are implemented (qcow2 by the block layer).
_KNOWN_FORMATS = {"raw", "qcow2", "qcow", "vmdk", "vdi", "vhdx", "vpc", "qed", "luks", "dmg"}
_FORMATS = ("raw", "qcow2")
_KNOWN_INTERFACES = {"ide", "scsi", "sd", "mtd", "floppy", "pflash", "virtio", "none", "xen"}
# -drive keys accepted and ignored: they tune the host side only (caching, AIO).
_IGNORED_DRIVE_KEYS = {"cache", "aio", "discard", "detect-zeroes", "werror", "rerror", "media"}
_DRIVE_KEYS = {"file", "format", "if", "id", "readonly", "read-only", "index", "unit", "bus",
               "snapshot"}  # fmt: skip
PFLASH_BANKS = 2  # the virt boards' flash banks


def _open(
    path: str,
    read_only: bool,
    option: str,
    snapshot: bool = False,
    fmt: str | None = None,
    warn: Callable[[str], None] | None = None,
    kind: str = "file",
) -> BlockBackend:
    """An image as QEMU's file/host_device protocol and raw/qcow2 format open it; `fmt` None
    probes (a qcow2 header is never taken for raw data, which a guest would write over)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise DeviceOptionError(f"{option}: Could not open '{path}': {exc.strerror}") from None
    if kind == "file" and not stat.S_ISREG(info.st_mode) and not stat.S_ISBLK(info.st_mode):
        raise DeviceOptionError(f"{option}: 'file' driver requires '{path}' to be a regular file")
    if kind == "host_device" and not (stat.S_ISBLK(info.st_mode) or stat.S_ISCHR(info.st_mode)):
        raise DeviceOptionError(
            f"{option}: 'host_device' driver requires '{path}' to be either a character or "
            "block device"
        )
    try:
        probed = probe(path) if fmt is None else fmt
    except (OSError, BlockError) as exc:
        raise DeviceOptionError(f"{option}: Could not open '{path}': {exc}") from None
    if probed == "qcow2":
        try:
            driver = open_image(path, "qcow2", read_only=read_only or snapshot, warn=False)
        except BlockError as exc:
            text = str(exc)
            if fmt == "qcow2" and probe(path) != "qcow2":
                text = "Image is not in qcow2 format"
            raise DeviceOptionError(f"{option}: {text}") from None
        return BlockBackend(path, read_only=read_only, snapshot=snapshot, driver=driver)
    try:
        backend = BlockBackend(path, read_only=read_only, snapshot=snapshot)
    except OSError as exc:
        raise DeviceOptionError(f"{option}: Could not open '{path}': {exc.strerror}") from None
    if fmt is None and warn is not None and not read_only:
        warn(raw_probe_warning(path))
    return backend


def parse_drive(
    text: str,
    index: int,
    warn: Callable[[str], None],
    snapshot: bool = False,
    pflash_index: int = 0,
) -> Drive:
    """One -drive; `snapshot` is the command line's -snapshot (a drive's own snapshot= wins).
    `pflash_index` is the bank an if=pflash drive without index= gets (the next free one)."""
    option = f"-drive {text}"
    opts = parse_opts(text)
    for key in opts:
        if key not in _DRIVE_KEYS | _IGNORED_DRIVE_KEYS:
            raise DeviceOptionError(
                f"{option}: Block format 'raw' does not support the option '{key}'"
            )
    interface = opts.get("if", "virtio")  # the virt boards' default block interface
    if interface not in _KNOWN_INTERFACES:
        raise DeviceOptionError(f"{option}: unsupported bus type '{interface}'")
    unit = index
    if interface == "pflash":
        try:
            unit = int(opts.get("index", opts.get("unit", str(pflash_index))))
        except ValueError:
            raise DeviceOptionError(f"{option}: Invalid index") from None
        if not 0 <= unit < PFLASH_BANKS:
            raise DeviceOptionError(
                f"{option}: machine type does not support if=pflash,bus=0,unit={unit}"
            )
    elif interface not in ("virtio", "none"):
        raise DeviceOptionError(
            f"{option}: machine type does not support if={interface},bus=0,unit={index}"
        )
    fmt = opts.get("format")
    if fmt is not None and fmt not in _KNOWN_FORMATS:
        raise DeviceOptionError(f"{option}: Unknown driver '{fmt}'")
    if fmt is not None and fmt not in _FORMATS:
        raise DeviceOptionError(f"{option}: format '{fmt}' is not supported (only raw, qcow2)")
    try:
        read_only = on_off(opts.get("readonly", opts.get("read-only", "off")), "read-only")
    except DeviceOptionError as exc:
        raise DeviceOptionError(f"{option}: {exc}") from None
    path = opts.get("file")
    backend = None
    if path:
        try:
            snapshot = on_off(opts.get("snapshot", "on" if snapshot else "off"), "snapshot")
        except DeviceOptionError as exc:
            raise DeviceOptionError(f"{option}: {exc}") from None
        # QEMU gives flash its raw bytes when probing finds no format: no warning for pflash.
        backend = _open(path, read_only, option, snapshot, fmt, None if interface == "pflash"
                        else warn)  # fmt: skip
    elif interface == "virtio":
        raise DeviceOptionError(f"{option}: Device needs media, but drive is empty")
    name = opts.get("id", f"pflash{unit}" if interface == "pflash" else f"{interface}{index}")
    drive = Drive(name=name, backend=backend, option=option, interface=interface)
    drive.unit = unit  # type: ignore[attr-defined]
    return drive


# -blockdev keys by driver (besides driver, node-name and the common ones).
_BLOCKDEV_COMMON = {"driver", "node-name", "read-only", "auto-read-only", "cache.direct",
                    "cache.no-flush", "discard", "detect-zeroes", "force-share"}  # fmt: skip
_PROTOCOL_KEYS = {"filename", "aio", "locking", "pr-manager", "x-check-cache-dropped",
                  "aio-max-batch", "drop-cache"}  # fmt: skip


def parse_blockdev(text: str, nodes: dict[str, Drive]) -> Drive:
    """`-blockdev driver=file|host_device,filename=F,node-name=N` or
    `driver=raw|qcow2,file=N|file.driver=file|host_device,file.filename=F`."""
    option = f"-blockdev {text}"
    opts = parse_opts(text)
    driver = opts.get("driver")
    if driver is None:
        raise DeviceOptionError(f"{option}: Parameter 'driver' is missing")
    protocols = ("file", "host_device")
    if driver not in protocols + _FORMATS:
        if driver in _KNOWN_FORMATS or driver in ("nbd", "null-co", "http", "https", "ssh"):
            raise DeviceOptionError(f"{option}: driver '{driver}' is not supported")
        raise DeviceOptionError(f"{option}: Parameter 'driver' does not accept value '{driver}'")
    allowed = _BLOCKDEV_COMMON | (_PROTOCOL_KEYS if driver in protocols else {"file"})
    child_keys = {k for k in opts if k.startswith("file.")} if driver in _FORMATS else set()
    for key in opts:
        if key not in allowed and key not in child_keys:
            raise DeviceOptionError(f"{option}: Parameter '{key}' is unexpected")
    for key in child_keys:
        if key[5:] not in _PROTOCOL_KEYS | {"driver"} | _BLOCKDEV_COMMON:
            raise DeviceOptionError(f"{option}: Parameter '{key}' is unexpected")
    name = opts.get("node-name")
    if not name:
        raise DeviceOptionError(f"{option}: 'node-name' must be specified for the root node")
    if name in nodes:
        raise DeviceOptionError(f"{option}: Duplicate nodes with node-name='{name}'")
    try:
        read_only = on_off(opts.get("read-only", "off"), "read-only")
    except DeviceOptionError as exc:
        raise DeviceOptionError(f"{option}: {exc}") from None
    if driver in protocols:
        path = opts.get("filename")
        if not path:
            raise DeviceOptionError(f"{option}: Parameter 'filename' is missing")
        # A protocol node is the file's bytes: raw, never probed.
        backend = _open(path, read_only, option, fmt="raw", kind=driver)
        return Drive(name=name, backend=backend, option=option)
    child = opts.get("file")
    if child is not None:
        below = nodes.get(child)
        if below is None or below.backend is None:
            raise DeviceOptionError(
                f"{option}: Cannot find device='{child}' nor node-name='{child}'"
            )
        if driver == "raw":
            return Drive(name=name, backend=below.backend, option=option)
        below.backend.close()  # reopened through the format driver
        backend = _open(below.backend.path, read_only, option, fmt=driver)
        return Drive(name=name, backend=backend, option=option)
    path = opts.get("file.filename")
    kind = opts.get("file.driver", "file")
    if kind not in protocols or not path:
        raise DeviceOptionError(f"{option}: Parameter 'file' is missing")
    return Drive(name=name, backend=_open(path, read_only, option, fmt=driver, kind=kind),
                 option=option)  # fmt: skip


def plan_devices(
    drives: list[str],
    blockdevs: list[str],
    devices: list[str],
    board_name: str,
    warn: Callable[[str], None],
    snapshot: bool = False,
    pflash: dict[int, str] | None = None,
    network: NetworkPlan | None = None,
) -> DevicePlan:
    """Open the images and decide the devices; raises DeviceOptionError on bad input.
    `pflash` maps a flash bank to the -blockdev node -machine pflashN= names; `network` has the
    -netdev backends (NICs name them) and the NICs of -nic/-net."""
    plan = DevicePlan(board_name)
    for text in blockdevs:
        node = parse_blockdev(text, plan.drives)
        plan.add_drive(node, f"-blockdev {text}")
    for index, text in enumerate(drives):
        drive = parse_drive(text, index, warn, snapshot, pflash_index=len(plan.pflash))
        plan.add_drive(drive, f"-drive {text}")
        if drive.interface == "pflash":
            unit = drive.unit  # type: ignore[attr-defined]
            if unit in plan.pflash:
                raise DeviceOptionError(f"-drive {text}: drive with bus=0, unit={unit} exists")
            plan.pflash[unit] = drive
            drive.used = True
    for bank, node_name in (pflash or {}).items():
        drive = plan.drives.get(node_name)
        if drive is None or drive.interface != "none":
            raise DeviceOptionError(f"Property 'cfi.pflash01.drive' can't find value '{node_name}'")
        if drive.used:
            raise DeviceOptionError(
                f"Property 'cfi.pflash01.drive': Drive '{node_name}' is already in use by "
                "another device"
            )
        drive.used = True
        plan.pflash[bank] = drive
    if network is not None:
        plan.netdevs = network.backends
        # QEMU creates the NICs of -nic/-net while it builds the board, before any -device:
        # they take the first PCI slots.
        for nic in network.nics:
            text, opts = nic_device(nic)
            plan.add_device(text, opts)
    for text in devices:
        plan.add_device(text, parse_opts(text, implied="driver"))
    plan.finish()
    return plan
