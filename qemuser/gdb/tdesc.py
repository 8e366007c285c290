"""Target descriptions: the XML GDB reads (qXfer:features:read:target.xml) to learn the
registers, generated from a CPU spec's register data (qemuser.cpu.spec.DebugView), and the
encoding of register values in packets."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qemuser.cpu.spec import CpuSpec, DebugRegister


class TargetDescription:
    """How GDB sees one CPU spec: register numbers follow the order of the spec's features.
    `osabi` names the operating system when there is one (user mode: GNU/Linux)."""

    def __init__(self, spec: CpuSpec, osabi: str | None = None) -> None:
        self.view = spec.debug_view()
        self.osabi = osabi
        self.registers: tuple[DebugRegister, ...] = self.view.registers

    def target_xml(self) -> bytes:
        parts = [
            '<?xml version="1.0"?>',
            '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
            "<target>",
            f"<architecture>{self.view.architecture}</architecture>",
        ]
        if self.osabi:
            parts.append(f"<osabi>{self.osabi}</osabi>")
        for feature in self.view.features:
            parts.append(f'<feature name="{feature.name}">')
            if feature.types_xml:
                parts.append(feature.types_xml)
            for reg in feature.registers:
                group = f' group="{reg.group}"' if reg.group else ""
                parts.append(
                    f'<reg name="{reg.name}" bitsize="{reg.bits}" type="{reg.type}"{group}/>'
                )
            parts.append("</feature>")
        parts.append("</target>")
        return "\n".join(parts).encode()


def encode_register(value: int, bits: int) -> bytes:
    """A register's value as the protocol carries it: target byte order (little), in hex."""
    return (value & ((1 << bits) - 1)).to_bytes(bits // 8, "little").hex().encode()


def decode_register(text: bytes, bits: int) -> int:
    return int.from_bytes(bytes.fromhex(text[: bits // 4].decode()), "little")
