"""`qemuser-system-aarch64` / `qemuser-system-riscv64`: QEMU's system-mode command line.

QEMU options are single-dash words (`-kernel PATH`, `-nographic`), which click does not model,
so this is a small table-driven parser. Every error is one line on stderr and status 1.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import BinaryIO, NoReturn

from qemuser.cli.system_devices import (
    DEVICE_MODELS_BY_NAME,
    DeviceOptionError,
    check_globals,
    device_help,
    plan_devices,
    property_help,
)
from qemuser.system.boards import BOARDS
from qemuser.system.console import ConsoleInput, terminal_mode
from qemuser.system.devices import DEVICE_TYPES
from qemuser.system.machine import Machine, MachineConfig, MachineError
from qemuser.system.virtio import VirtioMmio

# Options that take a value, by canonical name; aliases map onto them.
_WITH_VALUE = {
    "machine",
    "cpu",
    "m",
    "smp",
    "kernel",
    "initrd",
    "append",
    "dtb",
    "bios",
    "serial",
    "display",
    "device",
    "drive",
    "blockdev",
    "monitor",
    "name",
    "accel",
    "global",
    "rtc",
    "L",
}
_FLAGS = {"nographic", "no-reboot", "no-shutdown", "s", "S", "snapshot"}
_ALIASES = {"M": "machine"}


class UsageError(Exception):
    pass


@dataclass
class Options:
    values: dict[str, str] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    drives: list[str] = field(default_factory=list)
    blockdevs: list[str] = field(default_factory=list)
    globals: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)


def parse_args(argv: list[str]) -> Options:
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            raise UsageError(f"{arg}: invalid option")
        name = arg.lstrip("-")
        value = None
        if "=" in name and name.split("=", 1)[0] in _WITH_VALUE | set(_ALIASES):
            name, value = name.split("=", 1)
        name = _ALIASES.get(name, name)
        if name in _FLAGS:
            opts.flags.add(name)
        elif name in _WITH_VALUE:
            if value is None:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"{arg}: requires an argument")
                value = argv[i]
            if name == "device":
                opts.devices.append(value)
            elif name == "drive":
                opts.drives.append(value)
            elif name == "blockdev":
                opts.blockdevs.append(value)
            elif name == "global":
                opts.globals.append(value)
            else:
                opts.values[name] = value
        else:
            raise UsageError(f"{arg}: invalid option")
        i += 1
    return opts


def parse_size(text: str) -> int:
    """QEMU's -m: a number of MiB, or a number with a K/M/G/T suffix; `size=` accepted."""
    text = text.split(",", 1)[0].removeprefix("size=").strip()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    mult = 1 << 20
    if text and text[-1].lower() in units:
        mult = units[text[-1].lower()]
        text = text[:-1]
        if text.endswith(("b", "B")):
            text = text[:-1]
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"-m {text}: invalid RAM size") from None
    if value <= 0 or value != value:
        raise UsageError(f"-m {text}: invalid RAM size")
    return int(value * mult)


def _serial(spec: str) -> BinaryIO:
    if spec in ("stdio", "mon:stdio"):
        return sys.stdout.buffer
    if spec == "null" or spec == "none":
        return open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the process
    if spec.startswith("file:"):
        try:
            return open(spec[5:], "wb")
        except OSError as exc:
            raise UsageError(
                f"-serial {spec}: could not open '{spec[5:]}': {exc.strerror}"
            ) from None
    raise UsageError(f"-serial {spec}: unsupported serial backend")


def run(arch: str, argv: list[str]) -> int:
    boards = BOARDS[arch]
    opts = parse_args(argv)
    machine_opt = opts.values.get("machine", "")
    machine_name = machine_opt.split(",", 1)[0]
    if machine_name in ("help", "?"):
        print("Supported machines are:")
        for name, board in boards.items():
            print(f"{name:<20} {board.description}")
        return 0
    if not machine_name:
        machine_name = next(iter(boards))
    board = boards.get(machine_name)
    if board is None:
        raise UsageError(f"unsupported machine type '{machine_name}'; use -machine help to list")
    cpu_opt = opts.values.get("cpu")
    if cpu_opt in ("help", "?"):
        print("Available CPUs:")
        for model in board.cpu.models:
            print(f"  {model.name:<16} {model.description}")
        return 0
    for dev in opts.devices:
        kind, _, rest = dev.partition(",")
        known = {d.kind: d for d in DEVICE_TYPES}
        if kind in ("help", "?"):
            print(device_help())
            return 0
        if rest in ("help", "?"):
            if kind in DEVICE_MODELS_BY_NAME:
                print(property_help(kind))
            elif kind in known:
                print(f"{kind}: {known[kind].description}")
            else:
                raise UsageError(f"-device {dev}: '{kind}' is not a valid device model name")
            return 0
    smp = opts.values.get("smp", "1").split(",", 1)[0].removeprefix("cpus=")
    if smp != "1":
        raise UsageError(f"-smp {smp}: only one CPU is supported")
    display = opts.values.get("display", "none")
    if display != "none":
        raise UsageError(f"-display {display}: only 'none' is supported")
    ram = parse_size(opts.values["m"]) if "m" in opts.values else board.default_ram
    if ram > board.max_ram or ram % 4096:
        raise UsageError(f"-m {opts.values.get('m')}: invalid RAM size for machine '{board.name}'")
    for key in ("kernel", "initrd", "dtb"):
        path = opts.values.get(key)
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"could not load {key} '{path}': No such file or directory")
    config = MachineConfig(
        board=board,
        ram_size=ram,
        cpu_model=cpu_opt.split(",", 1)[0] if cpu_opt else None,
        kernel=opts.values.get("kernel"),
        initrd=opts.values.get("initrd"),
        append=opts.values.get("append", ""),
        dtb=opts.values.get("dtb"),
        bios=opts.values.get("bios"),
        no_reboot="no-reboot" in opts.flags,
    )
    check_globals(opts.globals)
    plan = plan_devices(
        opts.drives,
        opts.blockdevs,
        opts.devices,
        board.name,
        warn=lambda text: print(text, file=sys.stderr),
        snapshot="snapshot" in opts.flags,
    )
    serial = opts.values.get("serial", "mon:stdio" if "nographic" in opts.flags else "stdio")
    console = _serial(serial)
    machine = Machine(config, console)
    plan.plug_into([d for d in machine.devices if isinstance(d, VirtioMmio)])
    machine.boot()
    try:
        stdin_fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # started with stdin closed
        stdin_fd = -1
    if serial not in ("stdio", "mon:stdio") or stdin_fd < 0:
        return machine.run()
    # Typed input goes to the board's UART; mon:stdio (-nographic) adds QEMU's Ctrl-A escapes.
    machine.console_input = ConsoleInput(stdin_fd, serial == "mon:stdio", machine.console_write)
    with terminal_mode(stdin_fd, keep_signals=serial == "stdio"):
        return machine.run()


def _main(arch: str) -> NoReturn:
    prog = f"qemuser-system-{arch}"
    try:
        status = run(arch, sys.argv[1:])
    except (UsageError, MachineError, DeviceOptionError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    sys.stdout.flush()
    sys.exit(status)


def main_aarch64() -> NoReturn:
    _main("aarch64")


def main_riscv64() -> NoReturn:
    _main("riscv64")
