"""From parsed -device, -drive and -global options to device objects, and onto the board's buses.

The command line (cli/) only splits the option strings; this module decides what they mean:
each -device names a registered model (devices/registry.py) whose `from_options` builds it,
drives are claimed by the devices that name them, `if=virtio` drives become virtio-blk devices
after the -device options (QEMU's order), and `plug_into` puts each device on a bus a board
device provides (the highest free virtio-mmio slot first, as QEMU).
"""

from __future__ import annotations

from qemuser.system.devices.base import Device
from qemuser.system.devices.registry import DeviceOptionError, Pluggable, lookup, on_off
from qemuser.system.drive import Drive
from qemuser.system.net.backend import NetBackend
from qemuser.system.virtio.blk import VirtioBlk
from qemuser.system.virtio.net import VirtioNet
from qemuser.system.virtio.pci import VirtioBlkPci


class DevicePlan:
    """What the command line asks to plug into the board, in QEMU's order."""

    def __init__(self, board_name: str) -> None:
        self.board_name = board_name
        self.devices: list[tuple[str, Pluggable]] = []  # (option text, device)
        self.drives: dict[str, Drive] = {}
        self.pflash: dict[int, Drive] = {}  # flash bank -> its image (-drive if=pflash, ...)
        self.ids: set[str] = set()  # -device id= values
        self.boot_order: list[tuple[int, object]] = []  # (bootindex, device)
        self.netdevs: dict[str, NetBackend] = {}  # -netdev/-nic/-net backends by id
        self._claimed_netdevs: set[str] = set()

    # --- PlugContext ------------------------------------------------------------------------
    def planned(self) -> list[Pluggable]:
        return [device for _, device in self.devices]

    def claim_drive(self, name: str | None, option: str) -> Drive:
        if not name:
            raise DeviceOptionError(f"{option}: drive property not set")
        drive = self.drives.get(name)
        if drive is None:
            raise DeviceOptionError(
                f"{option}: Property 'virtio-blk-device.drive' can't find value '{name}'"
            )
        if drive.interface == "virtio":
            # QEMU plugs -device options first, then finds its if=virtio drive taken.
            raise DeviceOptionError(
                f"{drive.option}: Drive '{name}' is already in use because it has been "
                "automatically connected to another device (did you need 'if=none' in the "
                "drive options?)"
            )
        if drive.used:
            raise DeviceOptionError(f"{option}: Drive '{name}' is already in use by another device")
        if drive.backend is None:
            raise DeviceOptionError(f"{option}: Device needs media, but drive is empty")
        drive.used = True
        return drive

    def claim_netdev(self, name: str, option: str) -> NetBackend:
        """The backend a NIC's netdev= names (each backend serves one NIC, as QEMU's)."""
        backend = self.netdevs.get(name)
        if backend is None:
            raise DeviceOptionError(
                f"{option}: Property 'virtio-net-device.netdev' can't find value '{name}'"
            )
        if name in self._claimed_netdevs:
            raise DeviceOptionError(
                f"{option}: Property 'virtio-net-device.netdev' can't take value '{name}', "
                "it's in use"
            )
        self._claimed_netdevs.add(name)
        return backend

    def start_network(self) -> None:
        """Once the machine exists: connect every NIC to its backend."""
        for _, device in self.devices:
            inner = getattr(device, "virtio", device)  # a virtio-*-pci proxy's device
            if isinstance(inner, VirtioNet):
                inner.start()

    # --- building ---------------------------------------------------------------------------
    def add_drive(self, drive: Drive, option: str) -> None:
        """A -blockdev node or -drive; an if=virtio drive gets its device in `finish`."""
        if drive.name in self.drives:
            raise DeviceOptionError(f"{option}: Duplicate ID '{drive.name}' for drive")
        self.drives[drive.name] = drive
        if drive.interface == "virtio":
            drive.used = True

    def add_device(self, text: str, opts: dict[str, str]) -> None:
        """One -device: `opts` as parsed, with the model name under 'driver'."""
        opts = dict(opts)
        name = opts.pop("driver", "")
        option = f"-device {text}"
        model = lookup(name, option, self.board_name)
        allowed = {p.name for p in model.properties}
        # id= names any device (QEMU's qdev id); bootindex= exists on bootable ones (block
        # devices), recorded for the firmware's boot order.
        dev_id = opts.pop("id", None)
        if dev_id is not None:
            if dev_id in self.ids:
                raise DeviceOptionError(f"{option}: Duplicate ID '{dev_id}' for device")
            self.ids.add(dev_id)
        bootindex = opts.pop("bootindex", None)
        if bootindex is not None:
            if "drive" not in allowed:
                raise DeviceOptionError(f"{option}: Property '{name}.bootindex' not found")
            if not bootindex.lstrip("-").isdigit():
                raise DeviceOptionError(f"{option}: Parameter 'bootindex' expects int64")
        for key in opts:
            if key not in allowed:
                raise DeviceOptionError(f"{option}: Property '{name}.{key}' not found")
        device = model.from_options(opts, self, option)
        if device is not None:
            self.devices.append((text, device))
            if bootindex is not None:
                self.boot_order.append((int(bootindex), device))

    def finish(self) -> None:
        """QEMU turns if=virtio drives into devices after the -device options; on the virt
        boards that is virtio-blk-pci (their PCI Express bus is where QEMU puts it)."""
        for drive in self.drives.values():
            if drive.interface == "virtio":
                assert drive.backend is not None  # an empty if=virtio drive is refused
                device = VirtioBlkPci(VirtioBlk(drive.backend), None)
                self.devices.append((f"virtio-blk-pci,drive={drive.name}", device))

    def plug_into(self, board_devices: list[Device]) -> None:
        """Put every planned device on the first board device providing its bus with room."""
        for option, device in self.devices:
            for provider in board_devices:
                if provider.provides_bus != device.bus:
                    continue
                try:
                    provider.plug(device)
                    break
                except ValueError:
                    continue
            else:
                raise DeviceOptionError(
                    f"-device {option}: No 'virtio-mmio-bus' bus found for device '{device.model}'"
                )


def boot_order_file(plan: DevicePlan) -> bytes | None:
    """fw_cfg's `bootorder` for the planned devices with a bootindex, once plugged: one
    OpenFirmware path per line by bootindex, NUL-terminated, as QEMU writes it (a virtio-mmio
    disk is `/virtio-mmio@<base, 16 digits>/disk@0,0`, which EDK2 translates)."""
    paths = []
    for _index, device in sorted(plan.boot_order, key=lambda entry: entry[0]):
        transport = getattr(device, "transport", None)
        if transport is None:
            continue
        paths.append(f"/virtio-mmio@{transport.base:016x}/disk@0,0")
    return ("\n".join(paths) + "\0").encode() if paths else None


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
            legacy = on_off(value, "force-legacy")
        except DeviceOptionError as exc:
            raise DeviceOptionError(f"-global {setting}: {exc}") from None
        if legacy:
            raise DeviceOptionError(
                f"-global {setting}: legacy virtio-mmio (version 1) is not supported"
            )
