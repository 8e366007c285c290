"""-d logging other than strace: `in_asm` (each newly translated block, disassembled with
capstone) and `page` (the guest memory layout once the program is loaded), both in the shape of
qemu's own logs so that the two can be read side by side. `strace` and `unimp` are handled by
Process.dispatch; -D sends all of it to a file (`proc.log`).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from capstone import Cs
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection
from unicorn import UC_HOOK_BLOCK, Uc, UcError

from qemuser.loader.elf import PT_LOAD, LoadedImage

if TYPE_CHECKING:
    from qemuser.user.runtime import RuntimeProcess

BLOCK_SEPARATOR = "----------------"
# qemu prints aarch64 addresses with at least 8 hex digits, riscv64 ones with 16 (each target's
# disassembler front end has its own format); keyed by CpuSpec.name.
ADDRESS_DIGITS = {"aarch64": 8, "riscv64": 16}


def install_logging(proc: RuntimeProcess) -> None:
    """Hook what the -d items ask for into a loaded process (before it runs)."""
    items = proc.config.log_items
    if "page" in items:
        proc.log.write(page_layout(proc))
        proc.log.flush()
    if "in_asm" in items:
        BlockLogger(proc).install()


# ---- -d page -----------------------------------------------------------------------------------


def page_layout(proc: RuntimeProcess) -> str:
    """The mappings as qemu's -d page shows them after loading, then where things are."""
    lines = [
        "page layout changed following binary load",
        f"{'start':<16} {'end':<16} {'size':<16} prot",
    ]
    for m in proc.mem.mappings():
        prot = "".join(
            flag if m.prot & bit else "-" for bit, flag in ((1, "r"), (2, "w"), (4, "x"))
        )
        lines.append(f"{m.start:016x}-{m.end:016x} {m.size:016x} {prot}")
    image = proc.image
    stack = proc.stack
    if image is not None and stack is not None:
        start_code, end_code, start_data, end_data = _code_and_data(image)
        facts = (
            ("start_brk", proc.mem.brk_start),
            ("end_code", end_code),
            ("start_code", start_code),
            ("start_data", start_data),
            ("end_data", end_data),
            ("start_stack", stack.sp),
            ("brk", proc.mem.brk),
            ("entry", image.entry),
            ("argv_start", stack.argv_addr),
            ("env_start", stack.envp_addr),
            ("auxv_start", stack.auxv_addr),
        )
        lines += [f"{name:<11} 0x{value:016x}" for name, value in facts]
    return "\n".join(lines) + "\n"


def _code_and_data(image: LoadedImage) -> tuple[int, int, int, int]:
    """(start_code, end_code, start_data, end_data) as binfmt_elf computes them: executable
    segments make the code, writable ones the data (file contents only, not bss)."""
    start_code = start_data = 1 << 64
    end_code = end_data = 0
    for kind, _offset, vaddr, filesz, _memsz, flags, _align in image.info.segments:
        if kind != PT_LOAD:
            continue
        low, high = vaddr + image.base, vaddr + image.base + filesz
        if flags & 1:  # PF_X
            start_code, end_code = min(start_code, low), max(end_code, high)
        if flags & 2:  # PF_W
            start_data, end_data = min(start_data, low), max(end_data, high)
    if start_code > end_code:
        start_code = end_code = 0
    if start_data > end_data:
        start_data = end_data = 0
    return start_code, end_code, start_data, end_data


# ---- -d in_asm ---------------------------------------------------------------------------------


class SymbolTable:
    """Function symbols of the loaded ELF images, to name blocks as qemu's `IN: name` does."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._entries: list[tuple[int, int, str]] = []  # (start, end, name), sorted by start

    def add_image(self, image: LoadedImage) -> None:
        try:
            with open(image.info.path, "rb") as stream:
                elf = ELFFile(stream)
                symbols = [
                    (sym["st_value"] + image.base, sym["st_size"], sym.name)
                    for section in elf.iter_sections()
                    if isinstance(section, SymbolTableSection)
                    for sym in section.iter_symbols()
                    if sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"] and sym.name
                ]
        except (OSError, ELFError):
            return  # no symbols: blocks are shown without a name
        for start, size, name in symbols:
            self._entries.append((start, start + max(size, 1), name))
        self._entries.sort()
        self._starts = [start for start, _, _ in self._entries]

    def name_at(self, address: int) -> str:
        """The function containing `address`, or "" (qemu prints `IN: ` then)."""
        index = bisect.bisect_right(self._starts, address)
        # aliases share a start and small symbols may nest: look at the few nearest starts
        for start, end, name in reversed(self._entries[max(0, index - 8) : index]):
            if start <= address < end:
                return name
        return ""


class BlockLogger:
    """A UC_HOOK_BLOCK callback that prints each block the first time it runs.

    unicorn calls block hooks on every execution of a block, not on translation: remembering the
    blocks already shown gives qemu's "once per translated block" output.
    """

    def __init__(self, proc: RuntimeProcess) -> None:
        self.proc = proc
        self.seen: set[tuple[int, int]] = set()
        self.disassembler = Cs(*proc.spec.capstone)
        self.digits = ADDRESS_DIGITS.get(proc.spec.name, 16)
        self.symbols = SymbolTable()
        for image in (proc.image, proc.interp):
            if image is not None:
                self.symbols.add_image(image)

    def install(self) -> None:
        self.proc.uc.hook_add(UC_HOOK_BLOCK, self._on_block)

    def _on_block(self, uc: Uc, address: int, size: int, _user_data: object) -> None:
        key = (address, size)
        if key in self.seen:
            return
        self.seen.add(key)
        try:
            code = bytes(uc.mem_read(address, size))
        except UcError:
            return
        self.proc.log.write(self.format_block(address, code))
        self.proc.log.flush()

    def format_block(self, address: int, code: bytes) -> str:
        """One block as qemu logs it: a separator, `IN: symbol`, one line per instruction."""
        lines = [BLOCK_SEPARATOR, f"IN: {self.symbols.name_at(address)}"]
        decoded = 0
        for insn in self.disassembler.disasm(code, address):
            word = int.from_bytes(insn.bytes, "little")
            text = f"{insn.mnemonic:<8} {insn.op_str}".rstrip()
            lines.append(f"0x{insn.address:0{self.digits}x}:  {word:0{2 * insn.size}x}  {text}")
            decoded += insn.size
        if decoded < len(code):  # bytes capstone does not know: show them raw
            rest = code[decoded:]
            lines.append(f"0x{address + decoded:0{self.digits}x}:  {rest.hex()}  (unknown)")
        return "\n".join(lines) + "\n\n"
