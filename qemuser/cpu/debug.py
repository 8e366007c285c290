"""How a debugger sees a CPU's registers (GDB's target description: names, sizes, types,
feature groups). Each arch's spec builds its view on demand (CpuSpec.debug_view): only a run
with a debugger attached pays for the ~70 register records."""

from __future__ import annotations

from dataclasses import dataclass


# eq=False: compared by identity only (the generated __eq__ would cost its compilation).
@dataclass(frozen=True, eq=False)
class DebugRegister:
    """One register as a debugger sees it (GDB's target description: name, size, type)."""

    name: str
    bits: int
    uc_reg: int
    type: str  # a GDB target-description type: int, code_ptr, ieee_double, a union's id...
    group: str | None = None  # GDB's register group (vector, float) when not the default
    write_mask: int | None = None  # only these bits take a debugger's write (aarch64's cpsr)


@dataclass(frozen=True, eq=False)
class DebugFeature:
    """A named group of registers (org.gnu.gdb.aarch64.core: GDB checks the names it expects)."""

    name: str
    registers: tuple[DebugRegister, ...]
    types_xml: str = ""  # definitions of the types the registers use, as target-XML elements


@dataclass(frozen=True, eq=False)
class DebugView:
    """The registers a debugger shows for the arch, numbered in the order of the features."""

    architecture: str  # GDB's name for it (aarch64, riscv:rv64)
    features: tuple[DebugFeature, ...]

    @property
    def registers(self) -> tuple[DebugRegister, ...]:
        return tuple(reg for feature in self.features for reg in feature.registers)
