"""CPU properties in QEMU's syntax: `-cpu MODEL,NAME=VALUE,...` (riscv64's rv64 model).

QEMU applies each as a global property of the CPU's QOM type (`rv64-riscv-cpu`); its errors are
"can't apply global TYPE.NAME=VALUE: Property 'TYPE.NAME' not found" and "... Parameter 'NAME'
expects 'on' or 'off'" (measured with Debian's qemu-riscv64 7.2), and its vendor models
(sifive-u54) have none of these properties. The names and defaults are QEMU 7.2's for rv64.

Unicorn 2.1.4's riscv core (QEMU 5.0's) decodes a fixed set, RV64IMAFDC with Zicsr and
Zifencei, S and U modes, an MMU and PMP, and ignores writes to misa, so most values cannot be
given to the guest: a property keeps QEMU's syntax and errors, and a value the core cannot honour
is refused, never silently ignored. The one extra value honoured is c=off, which the runtime
enforces itself (qemuser.user.nocompressed).
"""

from __future__ import annotations

from dataclasses import dataclass

ON = ("on", "yes", "true", "y")  # what QEMU's boolean parser takes (case matters)
OFF = ("off", "no", "false", "n")


@dataclass(frozen=True, eq=False)
class CpuProperty:
    """A boolean property of a CPU model: QEMU's default and the values qemuser can give."""

    name: str
    default: bool  # QEMU 7.2's value for the model
    honoured: tuple[bool, ...]  # the values the guest really gets
    description: str


def _fixed(name: str, default: bool, description: str) -> CpuProperty:
    return CpuProperty(name, default, (default,), description)


_RV64 = (
    _fixed("i", True, "RV64I base integer ISA"),
    _fixed("e", False, "RV64E (16 registers)"),
    _fixed("g", True, "IMAFD, Zicsr, Zifencei"),
    _fixed("m", True, "integer multiply and divide"),
    _fixed("a", True, "atomics"),
    _fixed("f", True, "single-precision floating point"),
    _fixed("d", True, "double-precision floating point"),
    CpuProperty("c", True, (True, False), "compressed instructions"),
    _fixed("s", True, "supervisor mode"),
    _fixed("u", True, "user mode"),
    _fixed("v", False, "vector extension"),
    _fixed("h", False, "hypervisor extension"),
    _fixed("Zicsr", True, "CSR instructions"),
    _fixed("Zifencei", True, "instruction-fetch fence"),
    _fixed("mmu", True, "virtual memory (Sv39)"),
    _fixed("pmp", True, "physical memory protection"),
    _fixed("debug", True, "debug specification (Sdext)"),
    *(
        _fixed(name, False, description)
        for name, description in (
            ("Zfh", "half-precision floating point"),
            ("Zfhmin", "minimal half-precision floating point"),
            ("Zve32f", "embedded vector, 32-bit float"),
            ("Zve64f", "embedded vector, 64-bit float"),
            ("sscofpmf", "counter overflow and mode filtering"),
            ("sstc", "supervisor timer compare"),
            ("svinval", "fine-grained TLB invalidation"),
            ("svnapot", "NAPOT translation contiguity"),
            ("svpbmt", "page-based memory types"),
            ("zba", "address generation (sh1add...)"),
            ("zbb", "basic bit manipulation (andn, clz...)"),
            ("zbc", "carry-less multiplication"),
            ("zbkb", "bit manipulation for cryptography"),
            ("zbkc", "carry-less multiplication for cryptography"),
            ("zbkx", "crossbar permutations"),
            ("zbs", "single-bit instructions"),
            ("zk", "standard scalar cryptography"),
            ("zkn", "NIST algorithm suite"),
            ("zknd", "AES decryption"),
            ("zkne", "AES encryption"),
            ("zknh", "SHA-2 hashes"),
            ("zkr", "entropy source"),
            ("zks", "ShangMi algorithm suite"),
            ("zksed", "SM4 block cipher"),
            ("zksh", "SM3 hash"),
            ("zkt", "data-independent execution latency"),
            ("zdinx", "double precision in integer registers"),
            ("zfinx", "single precision in integer registers"),
            ("zhinx", "half precision in integer registers"),
            ("zhinxmin", "minimal half precision in integer registers"),
            ("zmmul", "multiply only"),
            ("x-epmp", "enhanced PMP (experimental)"),
            ("x-smaia", "advanced interrupts, M level (experimental)"),
            ("x-ssaia", "advanced interrupts, S level (experimental)"),
            ("x-j", "dynamically translated languages (experimental)"),
        )
    ),
)

# model name -> (QOM type name, its properties); a model not listed has none (QEMU's own)
MODEL_PROPERTIES: dict[str, dict[str, tuple[str, tuple[CpuProperty, ...]]]] = {
    "riscv64": {
        "rv64": ("rv64-riscv-cpu", _RV64),
        "sifive-u54": ("sifive-u54-riscv-cpu", ()),
    },
}


_QOM_SUFFIX = {"aarch64": "arm-cpu", "riscv64": "riscv-cpu"}  # QEMU's CPU type names


class CpuOptionError(ValueError):
    """A -cpu property QEMU would refuse, or one the core cannot honour (the message is the
    whole one-line error, without the program's name)."""


def properties_of(arch: str, model: str) -> tuple[CpuProperty, ...]:
    entry = MODEL_PROPERTIES.get(arch, {}).get(model)
    return entry[1] if entry else ()


def parse_properties(arch: str, model: str, items: list[str]) -> dict[str, bool]:
    """`NAME=VALUE` items after the model's name -> {name: value}, checked as QEMU checks
    them, then against what the core can honour. CpuOptionError for the first bad one."""
    qom_type, known = MODEL_PROPERTIES.get(arch, {}).get(
        model, (f"{model}-{_QOM_SUFFIX[arch]}", ())
    )
    by_name = {prop.name: prop for prop in known}
    chosen: dict[str, bool] = {}
    for item in items:
        if item == "":
            continue  # QEMU skips empty items ("rv64,")
        name, equals, text = item.partition("=")
        if not equals:
            raise CpuOptionError(f"Expected key=value format, found {item}.")
        where = f"can't apply global {qom_type}.{item}"
        prop = by_name.get(name)
        if prop is None and model not in MODEL_PROPERTIES.get(arch, {}):
            # QEMU has properties here (aarch64's sve=, pauth=...): none is implemented
            raise CpuOptionError(f"{where}: qemuser implements no properties of {model}")
        if prop is None:
            raise CpuOptionError(f"{where}: Property '{qom_type}.{name}' not found")
        if text in ON:
            value = True
        elif text in OFF:
            value = False
        else:
            raise CpuOptionError(f"{where}: Parameter '{name}' expects 'on' or 'off'")
        if value not in prop.honoured:
            state = "on" if value else "off"
            raise CpuOptionError(
                f"{where}: unicorn's core cannot turn {prop.name} ({prop.description}) {state}"
            )
        chosen[name] = value
    return chosen


def split_cpu_option(text: str) -> tuple[str, list[str]]:
    """`MODEL,NAME=VALUE,...` -> (model, items)."""
    model, *items = text.split(",")
    return model, items


def properties_help(arch: str, model: str) -> list[str]:
    """The lines `-cpu help` adds for `model`'s properties."""
    known = properties_of(arch, model)
    if not known:
        return []
    lines = [
        f"Properties of {model} (-cpu {model},NAME=on|off); those marked 'always' are fixed by",
        "unicorn's core, and asking for the other value is refused:",
    ]
    for prop in known:
        default = "on" if prop.default else "off"
        if len(prop.honoured) > 1:
            values = f"on|off, default {default}"
        else:
            values = f"always {default}"
        lines.append(f"  {prop.name:<10} {values:<19} {prop.description}")
    return lines
