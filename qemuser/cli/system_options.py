"""QEMU's system-mode options: the table of what exists and takes a value, and the checks of
-machine, -cpu, -accel, -rtc, -boot and -d values, with QEMU 7.2's messages.

QEMU options are single-dash words (`-kernel PATH`, `-nographic`), which click does not model,
so this is a small table-driven parser. What is known to QEMU but not modelled is refused in
QEMU's words (or with a clear "not supported"), never silently ignored.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field

from qemuser.system.boards import Board, virt_aarch64_el2, virt_aarch64_gicv3
from qemuser.system.chardev.spec import split_options


class UsageError(Exception):
    pass


# Options that take a value; those repeated keep every value, in order.
_WITH_VALUE = {
    "machine", "cpu", "m", "smp", "kernel", "initrd", "append", "dtb", "bios", "serial",
    "display", "device", "drive", "blockdev", "monitor", "qmp", "chardev", "mon", "name",
    "accel", "global", "rtc", "L", "pidfile", "boot", "d", "D", "gdb", "semihosting-config",
    "netdev", "nic", "net", "loadvm",
}  # fmt: skip
_REPEATED = {
    "machine", "serial", "device", "drive", "blockdev", "monitor", "qmp", "chardev", "mon",
    "accel", "global", "netdev", "nic", "net", "semihosting-config",
}  # fmt: skip
_FLAGS = {
    "nographic", "no-reboot", "no-shutdown", "s", "S", "snapshot", "nodefaults", "daemonize",
    "version", "h", "help", "semihosting", "enable-kvm",
}  # fmt: skip
_ALIASES = {"M": "machine"}


@dataclass
class Options:
    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)

    def all(self, name: str) -> list[str]:
        return self.lists.get(name, [])

    # Kept for the callers that read these by attribute.
    @property
    def devices(self) -> list[str]:
        return self.all("device")

    @property
    def drives(self) -> list[str]:
        return self.all("drive")

    @property
    def blockdevs(self) -> list[str]:
        return self.all("blockdev")


def parse_args(argv: list[str]) -> Options:
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            raise UsageError(f"{arg}: invalid option")
        name = arg[2:] if arg.startswith("--") else arg[1:]
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
            if name in _REPEATED:
                opts.lists.setdefault(name, []).append(value)
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


# --- -machine -------------------------------------------------------------------------------
@dataclass
class MachineOptions:
    """Every -machine option merged, as QEMU merges them (later values win)."""

    type: str = ""
    props: dict[str, str] = field(default_factory=dict)


def merge_machine(values: list[str]) -> MachineOptions:
    merged = MachineOptions()
    for text in values:
        for n, (key, value) in enumerate(split_options(text)):
            if not key and not value:
                continue
            if n == 0 and value == "" and "=" not in text.split(",", 1)[0]:
                merged.type = key  # the implied first item: the machine type
            elif key == "type":
                merged.type = value
            else:
                merged.props[key] = value or "on"
    return merged


_ON = ("on", "yes", "true")
_OFF = ("off", "no", "false")

# Machine properties we act on or that change nothing here, per arch; the value check says
# which values work. QEMU knows more: those are "not found" here only if QEMU lacks them too.
_AARCH64_PROPS = {
    "accel", "dumpdtb", "pflash0", "pflash1", "gic-version", "virtualization", "secure",
    "highmem", "its", "acpi", "graphics", "usb", "mte", "iommu", "ras", "dump-guest-core",
    "mem-merge", "dt-compatible", "firmware", "kernel", "initrd", "append", "dtb",
    "memory-backend", "suppress-vmdesc", "highmem-ecam", "highmem-mmio", "highmem-redists",
    "default-bus-bypass-iommu", "confidential-guest-support", "phandle-start",
    "memory-encryption", "nvdimm-persistence", "x-oem-id", "x-oem-table-id",
}  # fmt: skip
_RISCV64_PROPS = {
    "accel", "dumpdtb", "pflash0", "pflash1", "aclint", "aia", "aia-guests", "acpi",
    "dump-guest-core", "mem-merge", "dt-compatible", "firmware", "kernel", "initrd", "append",
    "dtb", "memory-backend", "suppress-vmdesc", "graphics", "usb",
    "default-bus-bypass-iommu", "confidential-guest-support", "phandle-start",
    "memory-encryption",
}  # fmt: skip
_AARCH64_PROPS |= {"dtb-randomness", "dtb-kaslr-seed"}
MACHINE_PROPS = {"aarch64": _AARCH64_PROPS, "riscv64": _RISCV64_PROPS}

# Host-side tuning QEMU applies to its own process: nothing to change in the guest.
_HOST_SIDE = {"dump-guest-core", "mem-merge", "suppress-vmdesc", "graphics", "usb"}


def _flag(value: str, prop: str, qom: str) -> bool:
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise UsageError(f"Parameter '{prop}' expects 'on' or 'off'")


def check_machine_props(arch: str, qom: str, props: dict[str, str]) -> None:
    """Refuse what QEMU would not know, and what it knows but qemuser does not model."""
    known = MACHINE_PROPS[arch]
    for prop, value in props.items():
        if prop not in known:
            raise UsageError(f"Property '{qom}.{prop}' not found")
        if prop in _HOST_SIDE or prop in ("accel", "dumpdtb", "pflash0", "pflash1"):
            continue
        if prop in ("kernel", "initrd", "append", "dtb", "firmware", "dt-compatible"):
            continue  # folded into the matching options by the caller
        if prop == "gic-version":
            if value not in ("2", "3", "host", "max"):
                raise UsageError("Invalid gic-version value\nValid values are 3, 2, host, max.")
            if value == "host":
                raise UsageError("gic-version=host requires KVM")  # QEMU's words under TCG
            if value != "2" and props.get("virtualization", "off") in _ON:
                # A GICv3 under EL2 needs the ICH_* (virtual CPU interface) registers too.
                raise UsageError(
                    f"mach-virt: gic-version={value} with virtualization=on is not supported "
                    "by qemuser (use gic-version=2)"
                )
        elif prop == "virtualization" and arch == "aarch64":
            _flag(value, prop, qom)  # on: machine_board gives the EL2 variant
        elif prop in ("virtualization", "secure", "mte"):
            if _flag(value, prop, qom):
                what = {
                    "virtualization": "Virtualization extensions",
                    "secure": "Security extensions",
                    "mte": "MTE",
                }[prop]
                raise UsageError(
                    f"mach-virt: qemuser does not support providing {what} to the guest CPU"
                )
        elif prop in ("highmem", "its", "highmem-ecam", "highmem-mmio", "highmem-redists"):
            _flag(value, prop, qom)  # nothing lives above 4 GiB here; there is no ITS
        elif prop in ("acpi",):
            if value not in ("on", "off", "auto"):
                raise UsageError(f"Parameter '{prop}' does not accept value '{value}'")
            if value == "on":
                raise UsageError(f"{qom}: ACPI tables are not provided by qemuser")
        elif prop == "default-bus-bypass-iommu":
            _flag(value, prop, qom)
        elif prop in ("dtb-randomness", "dtb-kaslr-seed"):
            if _flag(value, prop, qom):  # QEMU's default; the tree here has no random seeds
                raise UsageError(f"{qom}: {prop}=on is not supported by qemuser (use off)")
        else:
            raise UsageError(f"{qom}: property '{prop}' is not supported by qemuser")


def machine_board(arch: str, board: Board, props: dict[str, str]) -> Board:
    """The variant of `board` that checked machine properties ask for: virtualization=on makes
    the aarch64 virt board's CPUs start at EL2 (system/boards.py)."""
    if arch == "aarch64" and props.get("virtualization", "off") in _ON:
        return virt_aarch64_el2()
    if arch == "aarch64" and props.get("gic-version") in ("3", "max"):
        return virt_aarch64_gicv3()  # max: QEMU picks a GICv3 under TCG
    return board


# --- -cpu, -accel ---------------------------------------------------------------------------
def cpu_qom_type(arch: str, model: str) -> str:
    return f"{model}-arm-cpu" if arch == "aarch64" else f"{model}-riscv-cpu"


def check_cpu_props(arch: str, text: str) -> str:
    """-cpu MODEL[,prop=value...]: the model; any property is refused as QEMU does for one it
    does not know (qemuser's models have no tunable properties)."""
    model, _, rest = text.partition(",")
    for key, value in split_options(rest) if rest else []:
        if not key:
            continue
        setting = f"{key}={value or 'on'}"
        qom = cpu_qom_type(arch, model)
        raise UsageError(f"can't apply global {qom}.{setting}: Property '{qom}.{key}' not found")
    return model


_QEMU_ACCELERATORS = {"kvm", "xen", "hax", "hvf", "whpx", "nvmm", "qtest"}


def check_accel(values: list[str], machine_accel: str | None) -> None:
    """Only TCG exists here (the unicorn core is QEMU's TCG); QEMU's words for the others."""
    for text in values:
        pairs = split_options(text)
        name = pairs[0][0] if pairs and not pairs[0][1] else ""
        if name != "tcg":
            raise UsageError(f"-accel {text}: invalid accelerator {name or text}")
        for key, value in pairs[1:]:
            if key == "thread" and value in ("single", "multi"):
                continue
            if key in ("tb-size", "split-wx", "one-insn-per-tb"):
                continue  # tuning of QEMU's own code cache
            raise UsageError(f"-accel {text}: Property 'tcg-accel.{key}' not found")
    if machine_accel is not None:
        for name in machine_accel.split(":"):
            if name != "tcg":
                raise UsageError(f"invalid accelerator {name}")


# --- -rtc -----------------------------------------------------------------------------------
def parse_rtc(text: str) -> int:
    """-rtc base=utc|localtime|DATE,clock=host|rt|vm,driftfix=none|slew: the guest clock's
    offset from the host's UTC clock, in seconds."""
    offset = 0
    for key, value in split_options(text):
        if key == "base":
            if value == "utc":
                offset = 0
            elif value == "localtime":
                offset = -time.timezone if not time.localtime().tm_isdst else -time.altzone
            else:
                offset = _rtc_date(value)
        elif key == "clock":
            if value not in ("host", "rt", "vm"):
                raise UsageError(f"invalid option value '{value}'")
        elif key == "driftfix":
            if value not in ("none", "slew"):
                raise UsageError(f"invalid option value '{value}'")
        else:
            raise UsageError(f"-rtc {text}: Invalid parameter '{key}'")
    return offset


def _rtc_date(value: str) -> int:
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            when = datetime.datetime.strptime(value, fmt).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
        return int(when.timestamp() - time.time())
    raise UsageError(
        "invalid datetime format\nvalid formats: '2006-06-17T16:01:21' or '2006-06-17'"
    )


# --- -boot ----------------------------------------------------------------------------------
_BOOT_KEYS = {"order", "once", "menu", "splash", "splash-time", "reboot-timeout", "strict"}


def check_boot(text: str) -> None:
    """-boot [order=]drives[,once=,menu=on|off,...]: checked as QEMU does; on the virt boards
    the order reaches the firmware only through fw_cfg, which is not modelled."""
    for n, (key, value) in enumerate(split_options(text)):
        if n == 0 and value == "" and key not in _BOOT_KEYS:
            key, value = "order", key
        if key not in _BOOT_KEYS:
            raise UsageError(f"-boot {text}: Invalid parameter '{key}'")
        if key in ("order", "once"):
            for char in value:
                if not "a" <= char <= "p":
                    raise UsageError(f"Invalid boot device '{char}'")
        elif key in ("menu", "strict") and value not in _ON + _OFF:
            raise UsageError(f"Parameter '{key}' expects 'on' or 'off'")


# --- -d -------------------------------------------------------------------------------------
LOG_ITEMS = (
    ("out_asm", "show generated host assembly code for each compiled TB"),
    ("in_asm", "show target assembly code for each compiled TB"),
    ("op", "show micro ops for each compiled TB"),
    ("op_opt", "show micro ops after optimization"),
    ("op_ind", "show micro ops before indirect lowering"),
    ("int", "show interrupts/exceptions in short format"),
    ("exec", "show trace before each executed TB (lots of logs)"),
    ("cpu", "show CPU registers before entering a TB (lots of logs)"),
    ("fpu", "include FPU registers in the 'cpu' logging"),
    ("mmu", "log MMU-related activities"),
    ("pcall", "x86 only: show protected mode far calls/returns/exceptions"),
    ("cpu_reset", "show CPU state before CPU resets"),
    ("unimp", "log unimplemented functionality"),
    ("guest_errors", "log when the guest OS does something invalid (eg accessing a\n"
     "non-existent register)"),
    ("page", "dump pages at beginning of user mode emulation"),
    ("nochain", "do not chain compiled TBs so that \"exec\" and \"cpu\" show\n"
     "complete traces"),
    ("plugin", "output from TCG plugins"),
    ("strace", "log every user-mode syscall, its input, and its result"),
    ("tid", "open a separate log file per thread; filename must contain '%d'"),
    ("trace:PATTERN", "enable trace events"),
)  # fmt: skip


def log_help() -> str:
    lines = ["Log items (comma separated):"]
    for name, text in LOG_ITEMS:
        first, *rest = text.split("\n")
        lines.append(f"{name:<15} {first}")
        lines.extend(f"{'':16}{more}" for more in rest)
    return "\n".join(lines)
