"""System mode's -d/-D: QEMU's log items that the machine can produce, written to stderr or the
-D file in QEMU's formats.

- in_asm: each translation block's code the first time it runs (a block hook: slow, only on);
- int: the exceptions unicorn hands to the machine (synchronous ones, as they are taken);
- guest_errors: accesses to addresses where nothing is mapped (memory.c's wording);
- unimp: device features the models do not implement (a device calls `log("unimp", ...)`).

One process-wide log: devices have no handle on the command line, and there is one machine.
"""

from __future__ import annotations

import sys
from typing import TextIO

SUPPORTED = ("in_asm", "int", "guest_errors", "unimp")

_items: frozenset[str] = frozenset()
_out: TextIO = sys.stderr


def configure(items: set[str], path: str | None) -> None:
    """Turn items on; `path` (-D) receives the log instead of stderr. OSError propagates."""
    global _items, _out
    _items = frozenset(items)
    _out = open(path, "a", buffering=1) if path else sys.stderr  # noqa: SIM115 - process-long


def enabled(item: str) -> bool:
    return item in _items


def log(item: str, text: str) -> None:
    if item in _items:
        _out.write(text)
        _out.flush()


# QEMU's names of the exceptions unicorn reports (target/arm/helper.c arm_log_exception,
# target/riscv/cpu.c riscv_excp_names).
_ARM_EXCEPTIONS = {
    1: "Undefined Instruction", 2: "SVC", 3: "Prefetch Abort", 4: "Data Abort", 5: "IRQ",
    6: "FIQ", 7: "Breakpoint", 11: "Hypervisor Call", 12: "Hyp Trap",
    13: "Secure Monitor Call", 14: "Virtual IRQ", 15: "Virtual FIQ", 16: "Semihosting call",
}  # fmt: skip
_RISCV_EXCEPTIONS = (
    "misaligned_fetch", "fault_fetch", "illegal_instruction", "breakpoint", "misaligned_load",
    "fault_load", "misaligned_store", "fault_store", "user_ecall", "supervisor_ecall",
    "hypervisor_ecall", "machine_ecall", "exec_page_fault", "load_page_fault", "reserved",
    "store_page_fault",
)  # fmt: skip


def disassembly(cs: object, code: bytes, addr: int, split: int = 4) -> list[str]:
    """Instructions as QEMU's capstone printer shows them (disas/capstone.c cap_dump_insn):
    the bytes in memory order, padded to the split, then mnemonic and operands."""
    lines = []
    for insn in cs.disasm(code, addr):  # type: ignore[attr-defined]
        raw = bytes(insn.bytes[:split]).hex().ljust(2 * split)
        lines.append(f"0x{insn.address:08x}:  {raw}  {insn.mnemonic:<8} {insn.op_str}".rstrip())
    return lines


def attach(machine: object) -> None:
    """The hooks of the enabled items on a machine's engine (each machine a reset builds)."""
    import capstone
    from unicorn import (
        UC_HOOK_BLOCK,
        UC_HOOK_INTR,
        UC_HOOK_MEM_FETCH_UNMAPPED,
        UC_HOOK_MEM_READ_UNMAPPED,
        UC_HOOK_MEM_WRITE_UNMAPPED,
        UC_MEM_READ_UNMAPPED,
        UC_MEM_WRITE_UNMAPPED,
    )

    uc = machine.uc  # type: ignore[attr-defined]
    spec = machine.config.board.cpu  # type: ignore[attr-defined]
    if enabled("in_asm"):
        cs = capstone.Cs(*spec.capstone)
        seen: set[int] = set()

        def on_block(uc_: object, address: int, size: int, _user: object) -> None:
            if address in seen:
                return
            seen.add(address)
            code = bytes(uc.mem_read(address, size))
            body = "".join(f"{line}\n" for line in disassembly(cs, code, address))
            log("in_asm", f"----------------\nIN: \n{body}\n")

        uc.hook_add(UC_HOOK_BLOCK, on_block)
    if enabled("int"):

        def on_intr(uc_: object, intno: int, _user: object) -> None:
            pc = uc.reg_read(spec.pc)
            if spec.name == "aarch64":
                name = _ARM_EXCEPTIONS.get(intno, "unknown")
                log("int", f"Taking exception {intno} [{name}] on CPU 0\n...at pc 0x{pc:x}\n")
            else:
                desc = _RISCV_EXCEPTIONS[intno] if intno < len(_RISCV_EXCEPTIONS) else "(unknown)"
                log("int", f"riscv_cpu_do_interrupt: hart:0, async:0, cause:{intno:016x}, "
                           f"epc:0x{pc:016x}, desc={desc}\n")  # fmt: skip

        uc.hook_add(UC_HOOK_INTR, on_intr)
    if enabled("guest_errors"):

        def on_unmapped(
            uc_: object, access: int, address: int, size: int, _value: int, _user: object
        ) -> bool:
            kind = {UC_MEM_READ_UNMAPPED: "read", UC_MEM_WRITE_UNMAPPED: "write"}.get(
                access, "fetch"
            )
            log("guest_errors", f"Invalid {kind} at addr 0x{address:X}, size {size}, region "
                                "'(null)', reason: rejected\n")  # fmt: skip
            return False  # the access still fails: the machine reports it

        uc.hook_add(
            UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED,
            on_unmapped,
        )
