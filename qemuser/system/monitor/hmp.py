"""HMP, QEMU's human monitor: text commands, QEMU's wording and output formats.

`HmpInterpreter.run(line)` returns what QEMU would print for that line (lines ending in CR LF,
as QEMU's monitor writes them); the same interpreter serves `-monitor`, Ctrl-A c on mon:stdio,
and QMP's human-monitor-command.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from qemuser.system.monitor.target import PACKAGE, QEMU_VERSION, MonitorTarget
from qemuser.system.net.clients import DuplicateNetdev, NetClientError, NetClients
from qemuser.system.snapshot import SnapshotError


class HmpError(Exception):
    """A command that failed; the message is printed as QEMU prints it."""


@dataclass(frozen=True)
class HmpCommand:
    name: str
    params: str  # as `help` shows them
    help: str
    run: Callable[[HmpInterpreter, list[str]], str]
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemoryFormat:
    """x/xp's /[count][format][size]."""

    count: int = 1
    format: str = "x"  # x d u o c i
    size: int = 4  # b=1 h=2 w=4 g=8


SIZES = {"b": 1, "h": 2, "w": 4, "g": 8}
FORMATS = "xduoci"


def parse_format(text: str, last: MemoryFormat) -> MemoryFormat:
    """QEMU's get_expr of x's "/fmt": count, then format and size letters in any order; what is
    not given is taken from the last x/xp (QEMU remembers them)."""
    digits = ""
    i = 0
    while i < len(text) and text[i].isdigit():
        digits += text[i]
        i += 1
    fmt, size = last.format, None
    for letter in text[i:]:
        if letter in SIZES:
            size = SIZES[letter]
        elif letter in FORMATS:
            fmt = letter
        else:
            raise HmpError(f"invalid char in format: '{letter}'")
    if size is None:
        size = 1 if fmt == "c" else (last.size if last.format != "c" else 4)
    return MemoryFormat(int(digits) if digits else 1, fmt, size)


def _printc(value: int) -> str:
    """QEMU's monitor_printc."""
    special = {ord("'"): "\\'", ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r"}
    if value in special:
        return f"'{special[value]}'"
    if 32 <= value < 127:
        return f"'{chr(value)}'"
    return f"'\\x{value:02x}'"


class HmpInterpreter:
    def __init__(self, target: MonitorTarget) -> None:
        self.target = target
        self.last_format = MemoryFormat()
        self.cpu_index = 0

    def run(self, line: str, cpu_index: int | None = None) -> str:
        """The output of one command line, with CR LF line ends ("" for none)."""
        if cpu_index is not None:
            self.cpu_index = cpu_index
        try:
            words = shlex.split(line, posix=True)
        except ValueError:
            words = line.split()
        if not words:
            return ""
        found = _lookup(words[0])
        try:
            if found is None:
                raise HmpError(f"unknown command: '{words[0]}'")
            text = found.run(self, words[1:])
        except HmpError as exc:
            text = f"{exc}\n"
        return text.replace("\n", "\r\n")


COMMANDS: list[HmpCommand] = []
INFO: list[HmpCommand] = []


def hmp(name: str, params: str, help_text: str, *aliases: str, info: bool = False):
    def register(run: Callable[[HmpInterpreter, list[str]], str]):
        (INFO if info else COMMANDS).append(HmpCommand(name, params, help_text, run, aliases))
        return run

    return register


def _lookup(word: str, table: list[HmpCommand] | None = None) -> HmpCommand | None:
    for cmd in COMMANDS if table is None else table:
        if word == cmd.name or word in cmd.aliases:
            return cmd
    return None


def _help_line(cmd: HmpCommand, prefix: str = "") -> str:
    names = "|".join((cmd.name, *cmd.aliases))
    return f"{prefix}{names} {cmd.params} -- {cmd.help}\n"


@hmp("help", "[cmd]", "show the help", "?")
def _help(_interp: HmpInterpreter, args: list[str]) -> str:
    if args and args[0] == "info":
        return "".join(_help_line(cmd, "info ") for cmd in INFO)
    if args:
        cmd = _lookup(args[0])
        if cmd is None:
            raise HmpError(f"unknown command: '{args[0]}'")
        return _help_line(cmd)
    return "".join(_help_line(cmd) for cmd in sorted(COMMANDS, key=lambda c: c.name))


@hmp("info", "[subcommand]", "show various information about the system state", "i")
def _info(interp: HmpInterpreter, args: list[str]) -> str:
    if not args:
        return "".join(_help_line(cmd, "info ") for cmd in INFO)
    cmd = _lookup(args[0], INFO)
    if cmd is None:
        raise HmpError(f"unknown command: 'info {args[0]}'")
    return cmd.run(interp, args[1:])


@hmp("stop", "", "stop emulation", "s")
def _stop(interp: HmpInterpreter, _args: list[str]) -> str:
    interp.target.pause()
    return ""


@hmp("cont", "", "resume emulation", "c")
def _cont(interp: HmpInterpreter, _args: list[str]) -> str:
    if interp.target.run_state == "shutdown":
        raise HmpError("Error: Resetting the Virtual Machine is required")
    interp.target.resume()
    return ""


@hmp("system_reset", "", "reset the system")
def _system_reset(interp: HmpInterpreter, _args: list[str]) -> str:
    interp.target.reset("host-qmp-system-reset")
    return ""


@hmp("system_powerdown", "", "send system power down event")
def _system_powerdown(interp: HmpInterpreter, _args: list[str]) -> str:
    interp.target.powerdown()
    return ""


@hmp("quit", "", "quit the emulator", "q")
def _quit(interp: HmpInterpreter, _args: list[str]) -> str:
    interp.target.quit("host-qmp-quit")
    return ""


@hmp("cpu", "index", "set the default CPU")
def _cpu(interp: HmpInterpreter, args: list[str]) -> str:
    indexes = [cpu.index for cpu in interp.target.cpus()]
    try:
        index = int(args[0], 0)
    except (IndexError, ValueError):
        raise HmpError("invalid CPU index") from None
    if index not in indexes:
        raise HmpError("invalid CPU index")
    interp.cpu_index = index
    return ""


def _parse_address(text: str) -> int:
    try:
        return int(text, 0) & 0xFFFF_FFFF_FFFF_FFFF
    except ValueError:
        raise HmpError(f"invalid char '{text[0]}' in expression") from None


def _memory_dump(interp: HmpInterpreter, args: list[str], physical: bool) -> str:
    last = interp.last_format
    fmt = MemoryFormat(1, last.format, last.size)  # QEMU keeps format and size, not the count
    if args and args[0].startswith("/"):
        fmt = parse_format(args[0][1:], interp.last_format)
        args = args[1:]
    if not args:
        raise HmpError("Parameter 'addr' is missing")
    addr = _parse_address(args[0])
    interp.last_format = fmt
    if fmt.format == "i":
        return "".join(
            f"{line}\n" for line in interp.target.disassemble(addr, fmt.count, interp.cpu_index)
        )
    size = fmt.size
    max_digits = {
        "o": -(-size * 8 // 3),
        "u": -(-size * 80 // 33),
        "d": -(-size * 80 // 33),
    }.get(fmt.format, size * 2)
    line_size = 8 if size == 1 else 16
    total = fmt.count * size
    out: list[str] = []
    offset = 0
    while offset < total:
        chunk = min(line_size, total - offset)
        out.append(f"{addr + offset:016x}:")
        try:
            data = interp.target.read_memory(addr + offset, chunk, physical, interp.cpu_index)
        except (OSError, ValueError):
            out.append(" Cannot access memory\n")
            break
        for i in range(0, chunk, size):
            value = int.from_bytes(data[i : i + size], "little")
            if fmt.format == "x":
                out.append(f" 0x{value:0{max_digits}x}")
            elif fmt.format == "o":
                out.append(" " + f"{'0' + format(value, 'o') if value else '0':>{max_digits}}")
            elif fmt.format == "u":
                out.append(f" {value:>{max_digits}}")
            elif fmt.format == "d":
                signed = value - (1 << 64) if size == 8 and value >> 63 else value
                out.append(f" {signed:>{max_digits}}")
            else:
                out.append(" " + _printc(value))
        out.append("\n")
        offset += chunk
    return "".join(out)


@hmp("x", "/fmt addr", "virtual memory dump starting at 'addr'")
def _x(interp: HmpInterpreter, args: list[str]) -> str:
    return _memory_dump(interp, args, physical=False)


@hmp("xp", "/fmt addr", "physical memory dump starting at 'addr'")
def _xp(interp: HmpInterpreter, args: list[str]) -> str:
    return _memory_dump(interp, args, physical=True)


@hmp(
    "sendkey",
    "keys [hold_ms]",
    "send keys to the VM (e.g. 'sendkey ctrl-alt-f1', default hold time=100 ms)",
)
def _sendkey(_interp: HmpInterpreter, args: list[str]) -> str:
    if not args:
        raise HmpError("Parameter 'keys' is missing")
    # The virt boards have no keyboard device unless one is added; QEMU drops the keys then.
    return ""


@hmp("status", "", "show the current VM status (running|paused)", info=True)
def _info_status(interp: HmpInterpreter, _args: list[str]) -> str:
    state = interp.target.run_state
    if state == "running":
        return "VM status: running\n"
    return "VM status: paused\n" if state == "paused" else f"VM status: paused ({state})\n"


@hmp("version", "", "show the version of QEMU", info=True)
def _info_version(_interp: HmpInterpreter, _args: list[str]) -> str:
    major, minor, micro = QEMU_VERSION
    return f"{major}.{minor}.{micro}{PACKAGE}\n"


@hmp("name", "", "show the current VM name", info=True)
def _info_name(interp: HmpInterpreter, _args: list[str]) -> str:
    name = interp.target.name
    return "" if name is None else f"{name}\n"


@hmp("cpus", "", "show infos for each CPU", info=True)
def _info_cpus(interp: HmpInterpreter, _args: list[str]) -> str:
    lines = []
    for cpu in interp.target.cpus():
        mark = "*" if cpu.index == interp.cpu_index else " "
        lines.append(f"{mark} CPU #{cpu.index}: thread_id={cpu.thread_id}\n")
    return "".join(lines)


@hmp("registers", "[-a|vcpu]", "show the cpu registers", info=True)
def _info_registers(interp: HmpInterpreter, args: list[str]) -> str:
    cpus = [cpu.index for cpu in interp.target.cpus()]
    if args and args[0] == "-a":
        chosen = cpus
    elif args:
        try:
            chosen = [int(args[0], 0)]
        except ValueError:
            raise HmpError(f"invalid char '{args[0][0]}' in expression") from None
        if chosen[0] not in cpus:
            raise HmpError(f"CPU#{chosen[0]} not available")
    else:
        chosen = [interp.cpu_index]
    return "".join(f"\nCPU#{index}\n{interp.target.register_dump(index)}" for index in chosen)


@hmp("mtree", "[-f]", "show memory tree", info=True)
def _info_mtree(interp: HmpInterpreter, _args: list[str]) -> str:
    return interp.target.memory_tree()


@hmp("qtree", "", "show device tree", info=True)
def _info_qtree(interp: HmpInterpreter, _args: list[str]) -> str:
    return interp.target.device_tree()


@hmp("block", "[-n] [-v] [device]", "show info of one block device or all block devices", info=True)
def _info_block(interp: HmpInterpreter, args: list[str]) -> str:
    wanted = [a for a in args if not a.startswith("-")]
    out = []
    for block in interp.target.blocks():
        if wanted and block.device not in wanted:
            continue
        ro = ", read-only" if block.read_only else ""
        out.append(f"{block.device}: {block.filename} ({block.driver}{ro})\n")
        out.append(f"    Attached to:      {block.qdev}\n")
        out.append("    Cache mode:       writeback\n")
    if wanted and not out:
        raise HmpError(f"Device '{wanted[0]}' not found")
    return "".join(out)


@hmp("chardev", "", "show the character devices", info=True)
def _info_chardev(interp: HmpInterpreter, _args: list[str]) -> str:
    return "".join(
        f"{label}: filename={filename}\n" for label, filename in interp.target.chardevs()
    )


@hmp("snapshots", "", "show the currently saved VM snapshots", info=True)
def _info_snapshots(interp: HmpInterpreter, _args: list[str]) -> str:
    # Internal snapshots live in the writable qcow2 images (system/snapshot.py); a target
    # without disks at all (a test double) has nowhere to keep them, in QEMU's words
    info = getattr(interp.target, "snapshot_info", None)
    return info() if info is not None else "no block device can store vmstate for snapshot\n"


def _snapshot_tag(command: str, args: list[str]) -> str:
    if not args:
        raise HmpError(f'{command}: string expected\nTry "help {command}" for more information')
    return args[0]


@hmp("savevm", "tag", "save a VM snapshot. If no tag is provided, a new snapshot is created")
def _savevm(interp: HmpInterpreter, args: list[str]) -> str:
    try:
        interp.target.savevm(args[0] if args else None)
    except SnapshotError as exc:
        raise HmpError(f"Error: {exc}") from None
    return ""


@hmp("loadvm", "tag", "restore a VM snapshot from its tag")
def _loadvm(interp: HmpInterpreter, args: list[str]) -> str:
    try:
        interp.target.loadvm(_snapshot_tag("loadvm", args))
    except SnapshotError as exc:
        raise HmpError(f"Error: {exc}") from None
    return ""


@hmp("delvm", "tag", "delete a VM snapshot from its tag")
def _delvm(interp: HmpInterpreter, args: list[str]) -> str:
    try:
        interp.target.delvm(_snapshot_tag("delvm", args))
    except SnapshotError as exc:
        raise HmpError(f"Error: {exc}") from None
    return ""


@hmp("kvm", "", "show KVM information", info=True)
def _info_kvm(_interp: HmpInterpreter, _args: list[str]) -> str:
    return "kvm support: disabled\n"


# --- networking (system/net/clients.py keeps the clients and speaks QEMU's words) ------------
def _network(interp: HmpInterpreter) -> NetClients | None:
    # a target without networking (a test double) has no clients: QEMU's empty answers then
    return getattr(interp.target, "network", None)


def _string_expected(command: str) -> HmpError:
    return HmpError(f'{command}: string expected\nTry "help {command}" for more information')


@hmp("network", "", "show the network state", info=True)
def _info_network(interp: HmpInterpreter, _args: list[str]) -> str:
    network = _network(interp)
    return network.info_network() if network is not None else ""


@hmp("usernet", "", "show user network stack connection states", info=True)
def _info_usernet(interp: HmpInterpreter, _args: list[str]) -> str:
    network = _network(interp)
    return network.info_usernet() if network is not None else ""


def _hostfwd(interp: HmpInterpreter, args: list[str], command: str) -> str:
    if not args:
        raise _string_expected(command)
    network = _network(interp)
    netdev_id, rule = (args[0], args[1]) if len(args) > 1 else (None, args[0])
    try:
        if network is None:
            raise NetClientError("user mode network stack not in use")
        if command == "hostfwd_add":
            return network.hostfwd_add(netdev_id, rule)
        return network.hostfwd_remove(netdev_id, rule)
    except NetClientError as exc:
        raise HmpError(str(exc)) from None


@hmp(
    "hostfwd_add",
    "[netdev_id] [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport",
    "redirect TCP or UDP connections from host to guest (requires -net user)",
)
def _hostfwd_add(interp: HmpInterpreter, args: list[str]) -> str:
    return _hostfwd(interp, args, "hostfwd_add")


@hmp(
    "hostfwd_remove",
    "[netdev_id] [tcp|udp]:[hostaddr]:hostport",
    "remove host-to-guest TCP or UDP redirection",
)
def _hostfwd_remove(interp: HmpInterpreter, args: list[str]) -> str:
    return _hostfwd(interp, args, "hostfwd_remove")


@hmp(
    "netdev_add",
    "[user|tap|socket|stream|dgram|vde|bridge|hubport|netmap|vhost-user],id=str[,prop=value][,...]",
    "add host network device",
)
def _netdev_add(interp: HmpInterpreter, args: list[str]) -> str:
    network = _network(interp)
    try:
        if network is None:
            raise NetClientError("Parameter 'id' is missing" if not args else "No network")
        network.netdev_add(args[0] if args else "")
    except DuplicateNetdev as exc:
        arch = interp.target.cpus()[0].target
        raise HmpError(
            f'qemuser-system-{arch}: {exc}\nTry "help netdev_add" for more information'
        ) from None
    except NetClientError as exc:
        raise HmpError(f"Error: {exc}") from None
    return ""


@hmp("netdev_del", "id", "remove host network device")
def _netdev_del(interp: HmpInterpreter, args: list[str]) -> str:
    if not args:
        raise _string_expected("netdev_del")
    network = _network(interp)
    try:
        if network is None:
            raise NetClientError(f"Device '{args[0]}' not found")
        network.netdev_del(args[0])
    except NetClientError as exc:
        raise HmpError(f"Error: {exc}") from None
    return ""
