"""CPU cores described as data, shared by user mode and system mode.

Nothing here knows about Linux or devices: a spec (qemuser.cpu.spec) says which unicorn engine
to build, where the program counter, stack pointer and thread pointer live, how a trap
instruction surfaces, and how a debugger sees the registers. One module per architecture.
"""

from __future__ import annotations

from qemuser.cpu.aarch64 import AARCH64
from qemuser.cpu.riscv64 import RISCV64
from qemuser.cpu.spec import CpuModel, CpuSpec, SyscallConv, mark_unwritable_code

__all__ = ["CPUS", "CpuModel", "CpuSpec", "SyscallConv", "mark_unwritable_code", "spec_for_machine"]

CPUS: dict[str, CpuSpec] = {spec.name: spec for spec in (AARCH64, RISCV64)}


def spec_for_machine(elf_machine: int) -> CpuSpec | None:
    for spec in CPUS.values():
        if spec.elf_machine == elf_machine:
            return spec
    return None
