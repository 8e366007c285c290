"""`qemuser-system-aarch64` / `qemuser-system-riscv64`: QEMU's system-mode command line.

The options are parsed and checked in system_options.py, images and devices in
system_devices.py; this module puts the machine together: chardevs (-chardev, -serial,
-monitor, -qmp, -mon), the machine's session (monitor/target.py's MonitorTarget: -S, stop/cont,
system_reset, quit), then runs it. Every error is one line on stderr and status 1.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from qemuser.cli.machine_help import MACHINE_HELP
from qemuser.cli.system_devices import plan_devices
from qemuser.cli.system_options import (
    LOG_ITEMS,
    MachineOptions,
    Options,
    UsageError,
    check_accel,
    check_boot,
    check_cpu_props,
    check_machine_props,
    log_help,
    machine_board,
    merge_machine,
    parse_args,
    parse_rtc,
    parse_size,
)
from qemuser.system import debuglog
from qemuser.system.boards import BOARDS, Board
from qemuser.system.chardev.backends import Chardev, NullChardev
from qemuser.system.chardev.sockets import ChardevError, SocketSpec, parse_socket_spec
from qemuser.system.chardev.spec import (
    ChardevSpec,
    open_chardev,
    parse_chardev_option,
    parse_legacy,
    socket_spec,
    split_options,
)
from qemuser.system.console import ConsoleInput, terminal_mode
from qemuser.system.devices.firmware.fw_cfg import FwCfg
from qemuser.system.devices.registry import DeviceOptionError, device_help, model_help
from qemuser.system.machine import Machine, MachineConfig, MachineError
from qemuser.system.monitor.qmp import QmpSession
from qemuser.system.monitor.server import HmpSession, MonitorServer
from qemuser.system.monitor.target import QEMU_VERSION, BlockInfo, MachineInfo
from qemuser.system.net.clients import NetClients
from qemuser.system.net.netdev import plan_network
from qemuser.system.net.slirp import NetdevError
from qemuser.system.plug import boot_order_file, check_globals
from qemuser.system.semihosting import Semihosting, SemihostingConfig, parse_config
from qemuser.system.session import MachineSession
from qemuser.system.smp import SmpError, board_topology
from qemuser.system.snapshot import SnapshotError, VmSnapshots

__all__ = ["UsageError", "parse_args", "parse_size", "run"]

# QEMU's versioned machine types: the plain name is an alias of the newest version.
_VERSIONED = {"aarch64": "virt-7.2"}
_QOM_MACHINE = {"aarch64": "virt-7.2-machine", "riscv64": "virt-machine"}


class _ChardevWriter:
    """The machine's console output (a BinaryIO's write/flush) onto a chardev."""

    def __init__(self, chardev: Chardev) -> None:
        self.chardev = chardev

    def write(self, data: bytes) -> int:
        self.chardev.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


@dataclass
class Chardevs:
    """The command line's chardevs by id, and what uses them."""

    specs: dict[str, ChardevSpec] = field(default_factory=dict)
    opened: dict[str, Chardev] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def add(self, spec: ChardevSpec, option: str) -> None:
        if spec.id in self.specs:
            raise UsageError(f"{option}: Duplicate ID '{spec.id}' for chardev")
        self.specs[spec.id] = spec
        self.order.append(spec.id)

    def open(self, chardev_id: str) -> Chardev:
        if chardev_id not in self.opened:
            self.opened[chardev_id] = open_chardev(self.specs[chardev_id])
        return self.opened[chardev_id]

    def listing(self) -> list[tuple[str, str]]:
        return [(cid, dev.filename) for cid, dev in self.opened.items()]


def _machine_help(arch: str, boards: dict[str, Board]) -> str:
    lines = ["Supported machines are:"]
    for name, board in boards.items():
        version = _VERSIONED.get(arch)
        if version:
            lines.append(f"{name:<20} {board.description} (alias of {version})")
            lines.append(f"{version:<20} {board.description}")
        else:
            lines.append(f"{name:<20} {board.description}")
    lines.append(f"{'none':<20} empty machine")
    return "\n".join(lines)


def _machine_infos(arch: str, boards: dict[str, Board]) -> list[MachineInfo]:
    infos = []
    for name, board in boards.items():
        cpu = board.cpu.default_model.name
        qom_cpu = f"{cpu}-arm-cpu" if arch == "aarch64" else f"{cpu}-riscv-cpu"
        ram_id = "mach-virt.ram" if arch == "aarch64" else "riscv_virt_board.ram"
        version = _VERSIONED.get(arch)
        infos.append(
            MachineInfo(version or name, name if version else None, False, 1, qom_cpu, ram_id)
        )
    return infos


def _usage(prog: str) -> str:
    return (
        f"{_version_text()}\n"
        f"usage: {prog} [options]\n\n"
        "Standard options:\n"
        "-h or -help     display this help and exit\n"
        "-version        display version information and exit\n"
        "-machine [type=]name[,prop[=value][,...]]\n"
        "                selects emulated machine ('-machine help' for list)\n"
        "                property accel=tcg selects the accelerator\n"
        "                dumpdtb=file dumps the device tree and exits\n"
        "                pflash0=NODE,pflash1=NODE give the flash banks\n"
        "-cpu cpu        select CPU ('-cpu help' for list)\n"
        "-accel tcg      the accelerator (only TCG)\n"
        "-smp 1          the number of CPUs\n"
        "-m megs         set virtual RAM size to megs MB\n"
        "-name string    set the name of the guest\n"
        "-rtc [base=utc|localtime|date][,clock=host|rt|vm][,driftfix=none|slew]\n"
        "                set the RTC base and clock\n"
        "\nBlock device options:\n"
        "-drive [file=file][,if=virtio|none|pflash][,format=raw|qcow2][,id=name]\n"
        "       [,readonly=on|off][,snapshot=on|off]\n"
        "-blockdev [driver=]driver[,node-name=N][,read-only=on|off][,filename=F][,file=N]\n"
        "-snapshot       write to temporary files instead of disk image files\n"
        "\nCharacter device options:\n"
        "-chardev null|stdio|file|pipe|pty|socket|ringbuf,id=id[,...]\n"
        "-serial dev     redirect the serial port to char device 'dev'\n"
        "-monitor dev    redirect the monitor to char device 'dev'\n"
        "-qmp dev        like -monitor but opens in 'control' mode\n"
        "-mon [chardev=]name[,mode=readline|control]\n"
        "\nDevice options:\n"
        "-device driver[,prop[=value][,...]]\n"
        "                add device ('-device help' for list)\n"
        "-global driver.property=value\n"
        "\nBoot options:\n"
        "-kernel bzImage use 'bzImage' as kernel image\n"
        "-append cmdline use 'cmdline' as kernel command line\n"
        "-initrd file    use 'file' as initial ram disk\n"
        "-dtb    file    use 'file' as device tree image\n"
        "-bios file      set the filename for the BIOS\n"
        "-boot [order=drives][,once=drives][,menu=on|off]\n"
        "\nDisplay and run options:\n"
        "-display none   no display (the only one)\n"
        "-nographic      serial port and monitor on the terminal (C-a h for help)\n"
        "-nodefaults     don't create default devices\n"
        "-S              freeze CPU at startup (use 'c' to start execution)\n"
        "-gdb dev        accept gdb connection on 'dev' (tcp::PORT, tcp:HOST:PORT, unix:PATH)\n"
        "-s              shorthand for -gdb tcp::1234\n"
        "-no-reboot      exit instead of rebooting\n"
        "-no-shutdown    stop before shutdown\n"
        "-pidfile file   write PID to 'file'\n"
        "-daemonize      daemonize QEMU after initializing\n"
        "-d item1,...    enable logging of specified items (use '-d help' for a list)\n"
        "-D logfile      output log to logfile (default stderr)\n"
        "\nDuring emulation, the following keys are useful:\n"
        "When using -nographic, press 'ctrl-a h' to get some help.\n"
    )


def _version_text() -> str:
    major, minor, micro = QEMU_VERSION
    return (
        f"QEMU emulator version {major}.{minor}.{micro} (qemuser)\n"
        "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers"
    )


def _check_file(path: str, what: str, words: str, rom: bool = False) -> None:
    """Images must be regular files: a missing one, a directory, a FIFO or an empty file is
    refused as QEMU refuses what it cannot load (`rom`: -bios goes into a flash bank, which
    QEMU reports as a ROM image)."""
    try:
        info = os.stat(path)
    except OSError:
        if rom:
            raise UsageError(f"Could not find ROM image '{path}'") from None
        raise UsageError(f"could not load {words} '{path}'") from None
    if not stat.S_ISREG(info.st_mode) or (info.st_size == 0 and what in ("kernel", "bios")):
        reason = "" if stat.S_ISREG(info.st_mode) else ""
        if info.st_size == 0 and stat.S_ISREG(info.st_mode):
            reason = ": empty file"
        if rom:
            raise UsageError(f"Could not load ROM image '{path}'{reason}")
        raise UsageError(f"could not load {words} '{path}'{reason}")


def _monitor_spec(text: str, option: str, chardevs: Chardevs) -> tuple[str, object]:
    """A -monitor/-qmp value: ("socket", SocketSpec), ("chardev", id) or ("none", None)."""
    if text == "none":
        return ("none", None)
    if text.startswith(("tcp:", "unix:")):
        return ("socket", parse_socket_spec(text))
    if text.startswith("chardev:"):
        chardev_id = text[len("chardev:") :]
        if chardev_id not in chardevs.specs:
            raise UsageError(f'{option}: chardev "{chardev_id}" not found')
        return ("chardev", chardev_id)
    parsed = parse_legacy(text, f"compat_monitor{len(chardevs.specs)}")
    assert isinstance(parsed, ChardevSpec)
    chardevs.add(parsed, option)
    return ("chardev", parsed.id)


def _socket_of(spec: ChardevSpec) -> SocketSpec | None:
    if spec.backend != "socket":
        return None
    return socket_spec(spec)


def _serve_chardev_monitor(chardev: Chardev, session: MachineSession, mode: str) -> None:
    """A monitor on a non-socket chardev (pty, pipe, file, stdio): one session for its life."""
    import select
    import threading

    def send(data: bytes) -> None:
        chardev.write(data)

    monitor: QmpSession | HmpSession = (
        QmpSession(session, send) if mode == "control" else HmpSession(session, send)
    )

    def loop() -> None:
        monitor.start()
        while True:
            fds = chardev.wait_fds()
            if not fds:
                return
            select.select(fds, [], [], 1.0)
            data = chardev.read()
            if data:
                monitor.feed(data)

    threading.Thread(target=loop, daemon=True, name="monitor").start()


def run(arch: str, argv: list[str]) -> int:
    prog = f"qemuser-system-{arch}"
    boards = BOARDS[arch]
    opts = parse_args(argv)
    if "h" in opts.flags or "help" in opts.flags:
        print(_usage(prog), end="")
        return 0
    if "version" in opts.flags:
        print(_version_text())
        return 0
    machine_opts = merge_machine(opts.all("machine"))
    machine_name = machine_opts.type
    if machine_name in ("help", "?"):
        print(_machine_help(arch, boards))
        return 0
    if not machine_name:
        machine_name = next(iter(boards))
    versioned = _VERSIONED.get(arch)
    board = boards.get(machine_name if machine_name != versioned else "virt")
    if board is None:
        raise UsageError(f"unsupported machine type '{machine_name}'; use -machine help to list")
    qom = _QOM_MACHINE[arch]
    if machine_opts.props.get("help") == "on":
        print(f"{qom} options:")
        for line in MACHINE_HELP[arch]:
            print(line)
        return 0
    check_machine_props(arch, qom, machine_opts.props)
    board = machine_board(arch, board, machine_opts.props)
    _fold_machine_props(machine_opts, opts)
    if opts.values.get("d") == "help":
        print(log_help())
        return 0
    cpu_opt = opts.values.get("cpu")
    if cpu_opt in ("help", "?"):
        print("Available CPUs:")
        for model in board.cpu.models:
            print(f"  {model.name:<16} {model.description}")
        return 0
    for dev in opts.devices:
        kind, _, rest = dev.partition(",")
        if kind in ("help", "?"):
            print(device_help())
            return 0
        if rest in ("help", "?"):
            text = model_help(kind)
            if text is None:
                raise UsageError(f"-device {dev}: '{kind}' is not a valid device model name")
            print(text)
            return 0
    _refuse_unmodelled(opts)
    check_accel(opts.all("accel"), machine_opts.props.get("accel"))
    cpu_model = check_cpu_props(arch, cpu_opt) if cpu_opt else None
    smp_warnings: list[str] = []
    try:
        board_topology(arch, opts.values.get("smp", ""), smp_warnings)  # again in _start
    except SmpError as exc:
        raise UsageError(str(exc)) from None
    for warning in smp_warnings:
        print(f"{prog}: warning: {warning}", file=sys.stderr)
    display = opts.values.get("display", "none")
    if display != "none":
        raise UsageError(f"-display {display}: only 'none' is supported")
    ram = parse_size(opts.values["m"]) if "m" in opts.values else board.default_ram
    if ram > board.max_ram or ram % 4096:
        raise UsageError(f"-m {opts.values.get('m')}: invalid RAM size for machine '{board.name}'")
    if "append" in opts.values and "kernel" not in opts.values:
        raise UsageError("-append only allowed with -kernel option")
    if "initrd" in opts.values and "kernel" not in opts.values:
        raise UsageError("-initrd only allowed with -kernel option")
    if "dtb" in opts.values and "kernel" not in opts.values and "bios" not in opts.values:
        raise UsageError("-dtb only allowed with -kernel option")
    for key, words in (("kernel", "kernel"), ("initrd", "initrd"), ("dtb", "dtb")):
        if key in opts.values:
            _check_file(opts.values[key], key, words)
    bios = opts.values.get("bios")
    if bios not in (None, "none", "default"):
        _check_file(bios, "bios", "firmware", rom=bool(board.flash_size))
        if board.flash_size and os.path.getsize(bios) > board.flash_size:
            raise UsageError(f"Could not load ROM image '{bios}'")
    rtc_offset = parse_rtc(opts.values["rtc"]) if "rtc" in opts.values else 0
    if "boot" in opts.values:
        check_boot(opts.values["boot"])
    daemonize = "daemonize" in opts.flags
    if daemonize and "nographic" in opts.flags:
        raise UsageError("-nographic cannot be used with -daemonize")

    # --- block devices, devices -------------------------------------------------------------
    check_globals(opts.all("global"))
    try:
        network = plan_network(
            opts.all("netdev"), opts.all("nic"), opts.all("net"), "nodefaults" not in opts.flags
        )
    except NetdevError as exc:  # every line of it is the program's (guestfwd's have two)
        raise UsageError(str(exc).replace("\n", f"\nqemuser-system-{arch}: ")) from None
    plan = plan_devices(
        opts.drives,
        opts.blockdevs,
        opts.devices,
        board.name,
        warn=lambda text: print(text, file=sys.stderr),
        snapshot="snapshot" in opts.flags,
        pflash={
            bank: machine_opts.props[f"pflash{bank}"]
            for bank in (0, 1)
            if f"pflash{bank}" in machine_opts.props
        },
        network=network,
    )
    if 0 in plan.pflash and bios not in (None, "none", "default"):
        raise UsageError(
            "The contents of the first flash device may not be specified with both -bios and "
            "-drive/-blockdev. Use only one of the two options."
        )
    for bank, drive in plan.pflash.items():
        flash = board.flash_size
        if drive.backend is not None and flash and drive.backend.size != flash:
            raise UsageError(
                f"device requires {flash} bytes, block backend provides {drive.backend.size} bytes"
            )
        if not flash:
            raise UsageError(f"machine type does not support if=pflash,bus=0,unit={bank}")

    # --- chardevs ---------------------------------------------------------------------------
    chardevs = Chardevs()
    for text in opts.all("chardev"):
        try:
            spec = parse_chardev_option(text)
        except ChardevError as exc:
            raise UsageError(f"-chardev {text}: {exc}") from None
        chardevs.add(spec, f"-chardev {text}")
    nodefaults = "nodefaults" in opts.flags
    serials = opts.all("serial")
    # QEMU's defaults (vl.c): -nographic shares stdio between serial0 and the monitor, unless
    # a -serial or a monitor option is given, when the other one alone gets stdio.
    default_monitor = not (nodefaults or opts.all("monitor") or opts.all("qmp") or opts.all("mon"))
    nographic = "nographic" in opts.flags
    if not serials and not nodefaults:
        serials = ["mon:stdio" if nographic and default_monitor else "stdio"]
    elif nographic and default_monitor and not any(t.endswith("stdio") for t in serials):
        opts.lists.setdefault("monitor", []).append("stdio")
    serial_ids: list[str | None] = []
    for n, text in enumerate(serials):
        try:
            parsed = parse_legacy(text, f"serial{n}")
        except ChardevError as exc:
            raise UsageError(f"-serial {text}: {exc}") from None
        if parsed == "none":
            serial_ids.append(None)
        elif isinstance(parsed, str):
            if parsed not in chardevs.specs:
                raise UsageError(
                    f"-serial {text}: could not connect serial device to character backend '{text}'"
                )
            serial_ids.append(parsed)
        else:
            if daemonize and parsed.backend == "stdio":
                raise UsageError(f"-serial {text}: cannot use stdio with -daemonize")
            chardevs.add(parsed, f"-serial {text}")
            serial_ids.append(parsed.id)
    monitors: list[tuple[str, str, object]] = []  # (mode, kind, target)
    mux_monitor = bool(serials) and serials[0].startswith("mon:")
    if "nographic" in opts.flags and not opts.all("monitor") and serials == ["mon:stdio"]:
        mux_monitor = True
    for option, mode in (("monitor", "readline"), ("qmp", "control")):
        for text in opts.all(option):
            kind, target = _monitor_spec(text, f"-{option} {text}", chardevs)
            if kind != "none":
                monitors.append((mode, kind, target))
    for text in opts.all("mon"):
        mon = dict((k, v) for k, v in split_options(text))
        first = split_options(text)[0]
        chardev_id = mon.get("chardev") or (first[0] if not first[1] else "")
        mode = mon.get("mode", "readline")
        if mode not in ("readline", "control"):
            raise UsageError(f"-mon {text}: Parameter 'mode' does not accept value '{mode}'")
        if chardev_id not in chardevs.specs:
            raise UsageError(f'-mon {text}: chardev "{chardev_id}" not found')
        monitors.append((mode, "chardev", chardev_id))

    # A mux chardev (mux=on / mon:) shared by serial0 and a readline monitor is the console's
    # own monitor (C-a c), not a second reader of the same input.
    first_serial = serial_ids[0] if serial_ids else None
    for entry in list(monitors):
        mode, kind, target = entry
        if kind == "chardev" and target == first_serial and chardevs.specs[target].mux:
            monitors.remove(entry)
            mux_monitor = mode == "readline" or mux_monitor
    stdio_users = [cid for cid, spec in chardevs.specs.items() if spec.backend == "stdio"]
    if len(stdio_users) > 1:
        option = next((f"-serial {t}" for t in serials if t.endswith("stdio")), "-chardev stdio")
        raise UsageError(f"{option}: cannot use stdio by multiple character devices")
    pidfile = opts.values.get("pidfile")
    if pidfile:
        try:
            with open(pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as exc:
            raise UsageError(
                f"cannot create PID file: Could not create '{pidfile}': {exc.strerror}"
            ) from None
    # -daemonize forks before anything starts a host thread (threads do not survive a fork);
    # the parent returns once the child is set up, with its status.
    ready_fd = _fork_daemon() if daemonize else None
    try:
        return _start(
            arch, board, opts, machine_opts, plan, chardevs, serial_ids, monitors, mux_monitor,
            ram=ram, cpu_model=cpu_model, rtc_offset=rtc_offset, ready_fd=ready_fd,
            net_clients=NetClients.of(network, plan.devices),
        )  # fmt: skip
    finally:
        if pidfile:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
        for dev in chardevs.opened.values():
            dev.close()


def _fold_machine_props(machine_opts: MachineOptions, opts: Options) -> None:
    """-machine kernel=/initrd=/append=/dtb=/firmware= are the options of the same names."""
    for prop, option in (
        ("kernel", "kernel"),
        ("initrd", "initrd"),
        ("append", "append"),
        ("dtb", "dtb"),
        ("firmware", "bios"),
    ):
        if prop in machine_opts.props:
            opts.values.setdefault(option, machine_opts.props[prop])


def _refuse_unmodelled(opts: Options) -> None:
    """Options QEMU has that the machine cannot honour: refused, never ignored."""
    if "enable-kvm" in opts.flags:
        raise UsageError("-enable-kvm: invalid accelerator kvm")
    _semihosting_config(opts)  # a bad -semihosting-config fails before anything opens
    items = {item for item in opts.values.get("d", "").split(",") if item}
    known = {name for name, _ in LOG_ITEMS if name != "trace:PATTERN"}
    for item in sorted(items):
        if item not in known and not item.startswith("trace:"):
            raise UsageError(f"-d {item}: unknown log item (use '-d help' for a list)")
        if item not in debuglog.SUPPORTED:
            raise UsageError(f"-d {item}: system-mode logging of '{item}' is not supported")
    try:
        debuglog.configure(items, opts.values.get("D"))
    except OSError as exc:
        raise UsageError(f"Error opening logfile {opts.values['D']}: {exc.strerror}") from None
    if "L" in opts.values and not os.path.isdir(opts.values["L"]):
        raise UsageError(f"-L {opts.values['L']}: no such directory")


def _semihosting_config(opts: Options) -> SemihostingConfig | None:
    """-semihosting and every -semihosting-config, merged as QEMU's (None: off)."""
    config = SemihostingConfig()
    for value in opts.all("semihosting-config"):
        try:
            parse_config(value, config)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if "semihosting" in opts.flags:
        config.enabled = True
    return config if config.enabled else None


def _attach_semihosting(
    machine: Machine, config: SemihostingConfig, console: Chardev | None
) -> None:
    """Every vCPU answers the semihosting trap; SYS_GET_CMDLINE's line is arg=..., else, as
    QEMU's fallback, the -kernel name and the -append words."""
    words = config.args or [w for w in (machine.config.kernel, machine.config.append) if w]
    handler = Semihosting(
        config,
        cmdline=" ".join(words),
        ram=(machine.config.board.ram_base, machine.config.ram_size),
        stop=machine.stop,
        console=console,
    )
    for cpu in machine.cpus:
        cpu.semihosting = handler  # type: ignore[attr-defined]


def _start(
    arch: str,
    board: Board,
    opts: Options,
    machine_opts: MachineOptions,
    plan: object,
    chardevs: Chardevs,
    serial_ids: list[str | None],
    monitors: list[tuple[str, str, object]],
    mux_monitor: bool,
    *,
    ram: int,
    cpu_model: str | None,
    rtc_offset: int,
    ready_fd: int | None = None,
    net_clients: NetClients | None = None,
) -> int:
    from qemuser.system.plug import DevicePlan

    assert isinstance(plan, DevicePlan)
    # Every -serial's chardev is opened (a file one is created); the virt boards have one UART,
    # which gets the first, as QEMU's (a second -serial has no device to connect to).
    serial_chardevs: list[Chardev] = []
    for chardev_id in serial_ids:
        try:
            serial_chardevs.append(
                NullChardev("none") if chardev_id is None else chardevs.open(chardev_id)
            )
        except ChardevError as exc:
            raise UsageError(f"-serial {opts.all('serial')[0]}: {exc}") from None
    serial = serial_chardevs[0] if serial_chardevs else NullChardev("none")
    config = MachineConfig(
        board=board,
        ram_size=ram,
        cpu_model=cpu_model,
        kernel=opts.values.get("kernel"),
        initrd=opts.values.get("initrd"),
        append=opts.values.get("append", ""),
        dtb=opts.values.get("dtb"),
        bios=opts.values.get("bios"),
        no_reboot="no-reboot" in opts.flags,
        pflash={bank: drive.backend for bank, drive in plan.pflash.items() if drive.backend},
        rtc_offset=rtc_offset,
        smp=board_topology(board.cpu.name, opts.values.get("smp", "")),
    )

    semihosting = _semihosting_config(opts)
    semihosting_console = None
    if semihosting is not None and semihosting.chardev is not None:
        if semihosting.chardev not in chardevs.specs:
            raise UsageError(f"semihosting chardev '{semihosting.chardev}' not found")
        semihosting_console = chardevs.open(semihosting.chardev)

    def build() -> Machine:
        machine = Machine(config, _ChardevWriter(serial))  # type: ignore[arg-type]
        if semihosting is not None:
            _attach_semihosting(machine, semihosting, semihosting_console)
        plan.plug_into(machine.devices)
        bootorder = boot_order_file(plan)
        fw_cfg = next((d for d in machine.devices if isinstance(d, FwCfg)), None)
        if bootorder is not None and fw_cfg is not None:
            fw_cfg.add_file("bootorder", bootorder)
        machine.boot()
        debuglog.attach(machine)
        plan.start_network()  # the NICs' backends start once; a reset re-plugs the same NICs
        return machine

    dumpdtb = machine_opts.props.get("dumpdtb")
    if dumpdtb:
        machine = Machine(config, _ChardevWriter(serial))  # type: ignore[arg-type]
        plan.plug_into(machine.devices)
        if config.kernel or config.bios or config.pflash:
            dtb, _addr, _boot = machine.prepare_boot()
        else:
            dtb = machine.build_fdt(None)  # QEMU dumps the tree of a machine with no images
        try:
            with open(dumpdtb, "wb") as f:
                f.write(dtb)
        except OSError as exc:
            raise UsageError(f"Failed to write dtb to {dumpdtb}: {exc.strerror}") from None
        print(f"qemuser-system-{arch}: info: dtb dumped to {dumpdtb}. Exiting.",
              file=sys.stderr)  # fmt: skip
        return 0

    def blocks() -> list[BlockInfo]:
        found = []
        for name, drive in plan.drives.items():
            if drive.backend is None:
                continue
            found.append(
                BlockInfo(
                    device=name,
                    qdev=f"/machine/peripheral-anon/{name}",
                    filename=drive.backend.path,
                    driver=getattr(drive.backend, "format", "raw"),
                    read_only=drive.backend.read_only,
                    size=drive.backend.size,
                )
            )
        return found

    # savevm/loadvm: every drive takes part, the first writable qcow2 one keeps the vmstate
    snapshots = VmSnapshots(lambda: list(plan.drives.values()))
    session = MachineSession(
        build,
        snapshots=snapshots,
        network=net_clients,
        name=(opts.values.get("name") or "").split(",", 1)[0].removeprefix("guest=") or None,
        start_paused="S" in opts.flags,
        no_shutdown="no-shutdown" in opts.flags,
        blocks=blocks,
        chardevs=chardevs.listing,
        machines=lambda: _machine_infos(arch, BOARDS[arch]),
    )
    # -s / -gdb DEV: the GDB stub (system/gdbstub.py) listens; the machine does not wait for it
    from qemuser.system.gdbstub import GdbDeviceError, stub_from_options

    try:
        stub = stub_from_options("s" in opts.flags, opts.values.get("gdb"))
    except GdbDeviceError as exc:
        raise UsageError(str(exc)) from None
    if stub is not None:
        stub.attach(session)
    loadvm = opts.values.get("loadvm")
    if loadvm is not None:
        # -loadvm: the machine just built takes the snapshot's state before its first slice
        # (a system_reset later boots afresh, as QEMU's does)
        try:
            snapshots.load(session.machine, loadvm)
        except SnapshotError as exc:
            raise UsageError(str(exc)) from None
    servers: list[MonitorServer] = []
    for mode, kind, target in monitors:
        if kind == "socket":
            assert isinstance(target, SocketSpec)
            servers.append(_socket_monitor(target, session, mode))
            continue
        assert isinstance(target, str)
        spec = chardevs.specs[target]
        sock = _socket_of(spec)
        if sock is not None:
            servers.append(_socket_monitor(sock, session, mode))
        else:
            _serve_chardev_monitor(chardevs.open(target), session, mode)
    if ready_fd is not None:
        _detach(ready_fd, opts.values.get("pidfile"))

    def commit_all() -> None:
        for drive in plan.drives.values():
            if drive.backend is not None:
                drive.backend.commit()

    machine = session.machine
    stdin_fd = -1
    if (
        serial_ids
        and serial_ids[0] is not None
        and chardevs.specs[serial_ids[0]].backend == "stdio"
    ):
        try:
            stdin_fd = sys.stdin.fileno()
            os.fstat(stdin_fd)
        except (AttributeError, OSError, ValueError):  # started with stdin closed
            stdin_fd = -1
    mux = mux_monitor and stdin_fd >= 0
    try:
        if stdin_fd < 0:
            _attach_input(session, serial, mux_monitor, commit_all)
            return session.run()
        _attach_input(session, serial, mux, commit_all)
        del machine
        with terminal_mode(stdin_fd, keep_signals=not mux):
            return session.run()
    finally:
        for server in servers:
            server.close()
        for backend in plan.netdevs.values():
            backend.close()


def _attach_input(
    session: MachineSession, serial: Chardev, mux: bool, commit: Callable[[], None] | None = None
) -> None:
    """Typed input to the board's UART; mon:stdio adds QEMU's Ctrl-A escapes and the HMP
    monitor they switch to. Re-attached to each machine a reset builds."""
    writer = _ChardevWriter(serial)
    monitor = HmpSession(session, serial.write) if mux else None
    previous_build = session._build  # noqa: SLF001 - wrap the session's own builder

    def attach(machine: Machine) -> Machine:
        if not serial.wait_fds() and not mux:
            return machine
        machine.console_input = ConsoleInput(
            -1,
            mux,
            writer.write,
            monitor=monitor,
            commit=commit,
            wait_fds=serial.wait_fds,
            read=serial.read,
        )
        return machine

    def build() -> Machine:
        return attach(previous_build())

    session._build = build  # noqa: SLF001
    attach(session.machine)


def _socket_monitor(spec: SocketSpec, session: MachineSession, mode: str) -> MonitorServer:
    try:
        server = MonitorServer(spec, session, mode)
    except ChardevError as exc:
        raise UsageError(str(exc)) from None
    first = None
    if spec.server and spec.wait:
        print(f"QEMU waiting for connection on: disconnected:{spec.filename}", file=sys.stderr)
        first = server.wait_for_client()
    elif not spec.server:
        first = server.wait_for_client()
    server.start(first)
    return server


def _fork_daemon() -> int:
    """-daemonize, first half: fork; the parent waits for the child's word and exits with 0
    once it is set up (1 if it fails first: the child has printed why). The child's end of
    the pipe is returned."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        ready = os.read(read_fd, 1)
        os._exit(0 if ready == b"\0" else 1)
    os.close(read_fd)
    os.setsid()
    return write_fd


def _detach(ready_fd: int, pidfile: str | None) -> None:
    """-daemonize, second half: the machine is set up; its pid in the pidfile, the parent told,
    the standard streams on /dev/null."""
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    os.write(ready_fd, b"\0")
    os.close(ready_fd)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)


def _main(arch: str) -> NoReturn:
    prog = f"qemuser-system-{arch}"
    try:
        status = run(arch, sys.argv[1:])
    except (UsageError, MachineError, DeviceOptionError, ChardevError) as exc:
        text = str(exc)
        first, *rest = text.split("\n")
        print(f"{prog}: {first}", file=sys.stderr)
        for line in rest:  # QEMU's second lines (the valid values), as QEMU prints them
            print(line, file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:  # `... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    try:
        if sys.stdout is not None:  # None when started with fd 1 closed (`>&-`)
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(status)


def main_aarch64() -> NoReturn:
    _main("aarch64")


def main_riscv64() -> NoReturn:
    _main("riscv64")
