"""The shape of a CPU core as data (CpuSpec), shared by user mode and system mode.

Nothing here knows about Linux or devices: a spec says which unicorn engine to build, where the
program counter, stack pointer and thread pointer live, and how a trap instruction surfaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from unicorn import UC_HOOK_MEM_FETCH_PROT, Uc

if TYPE_CHECKING:
    from collections.abc import Callable

    from qemuser.cpu.debug import DebugView


# eq=False: these are compared by identity, and every start would compile the generated
# __eq__/__hash__ (dataclass methods are compiled at import, ~0.3 ms each).
@dataclass(frozen=True, eq=False)
class SyscallConv:
    """How a system-call trap surfaces from unicorn and where its operands live."""

    trap_intno: int  # the UC_HOOK_INTR number of the trap instruction (svc / ecall)
    number: int  # register holding the call number
    args: tuple[int, ...]  # registers holding the arguments, in order
    ret: int  # register receiving the result
    insn_size: int = 4  # bytes to step back when a call must be restarted


@dataclass(frozen=True, eq=False)
class CpuModel:
    """A selectable CPU model (`-cpu NAME`)."""

    name: str
    uc_model: int
    description: str
    # (feature, what the guest gets of it): one `-cpu help` line each, for the features whose
    # state is not obvious from the name (what unicorn's core lacks is said, not hidden)
    features: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, eq=False)
class CpuSpec:
    """An architecture as unicorn runs it: engine mode, models, registers, the trap of a call."""

    name: str
    elf_machine: int
    uc_arch: int
    uc_mode: int
    models: tuple[CpuModel, ...]  # the first one is the default
    pc: int
    sp: int
    tls: int
    link: int  # return-address register (used for signal trampolines)
    syscall: SyscallConv
    gprs: tuple[tuple[str, int], ...]  # (name, unicorn register) for dumps
    # the registers as a debugger sees them (qemuser.gdb.tdesc), built when one attaches
    debug_view: Callable[[], DebugView]
    page_size: int = 4096
    page_size_settable: bool = False  # unicorn lets this arch choose its target page size
    capstone: tuple[int, int] = (0, 0)  # (CS_ARCH_*, CS_MODE_*)
    little_endian: bool = True
    extra_init: tuple[tuple[int, int], ...] = field(default=())  # (register, value) at reset

    @property
    def default_model(self) -> CpuModel:
        return self.models[0]

    def model(self, name: str | None) -> CpuModel:
        """Look a model up by name; None gives the default. Raises KeyError when unknown."""
        if name is None:
            return self.default_model
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    def new_engine(self, model: CpuModel | None = None) -> Uc:
        """Build a unicorn engine for this architecture and model, reset as the spec says."""
        uc = Uc(self.uc_arch, self.uc_mode, (model or self.default_model).uc_model)
        # Must come before anything that initialises the engine (even ctl_get_page_size):
        # aarch64 otherwise uses 1 KiB target pages, which breaks 4 KiB guest mappings.
        if self.page_size_settable:
            uc.ctl_set_page_size(self.page_size)
        for reg, value in self.extra_init:
            uc.reg_write(reg, value)
        return uc


def _decline_fault(_uc: Uc, _access: int, _address: int, _size: int, _value: int, _data) -> bool:
    return False  # not handled: the fault stays what it would have been without the hook


def mark_unwritable_code(uc: Uc, begin: int, end: int) -> None:
    """Tell the engine that guest code in [begin, end) is not written by guest stores, which
    spares a scan of its whole TLB each time it translates a block there.

    After translating a block, unicorn resets the TLB entries of its page so that a later guest
    store to it drops the block (tlb_reset_dirty_by_vaddr in tb_gen_code, translate-all.c): a
    walk over every entry of every MMU mode, ~13% of all the CPU time of a shell starting
    programs. It skips that walk where a memory hook covers the block's address
    (uc_mem_hook_installed). A fetch-protection hook that declines every fault is such a hook
    and changes nothing else: it runs only when the guest fetches from a page without exec
    permission, and the fault stays what it was. Inside the range unicorn also never lets stores
    take the fast path, so should the range become writable later (mprotect, or a new mapping
    there: the hook stays), a store there still drops the stale blocks: self-modifying code stays
    correct, only slower.
    """
    uc.hook_add(UC_HOOK_MEM_FETCH_PROT, _decline_fault, begin=begin, end=end - 1)
