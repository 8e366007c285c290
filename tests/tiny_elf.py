"""Tiny hand-made ELF programs for the loader tests: an ELF64 header, program headers and
three instructions that exit with a status (exit_group), nothing else.

The text segment maps the file from offset 0 at 0x400000 (ET_EXEC), so its code sits right
after the program headers; more segments and PT_INTERP strings are added by the caller.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PT_LOAD, PT_INTERP, PT_GNU_STACK = 1, 3, 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4
TEXT = 0x40_0000
PAGE = 4096
EM = {"aarch64": 183, "riscv64": 243}


def exit_code(arch: str, status: int) -> bytes:
    """exit_group(status) in three instructions (status < 2048)."""
    if arch == "aarch64":
        # movz x0, #status; movz x8, #94 (exit_group); svc #0
        words = (0xD280_0000 | status << 5, 0xD280_0000 | 94 << 5 | 8, 0xD400_0001)
    else:
        # addi a0, zero, status; addi a7, zero, 94; ecall
        words = (status << 20 | 10 << 7 | 0x13, 94 << 20 | 17 << 7 | 0x13, 0x73)
    return struct.pack("<III", *words)


@dataclass(frozen=True)
class Segment:
    """One program header (Elf64_Phdr); p_paddr = p_vaddr, p_align = a page unless given."""

    kind: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    align: int = PAGE

    def pack(self) -> bytes:
        return struct.pack(
            "<IIQQQQQQ", self.kind, self.flags, self.offset, self.vaddr, self.vaddr,
            self.filesz, self.memsz, self.align,
        )  # fmt: skip


def program(
    arch: str,
    extra: tuple[Segment, ...] = (),
    *,
    status: int = 42,
    text_size: int | None = None,
    text_memsz: int | None = None,
    interps: tuple[bytes, ...] = (),
    phnum: int | None = None,
    padding: int = 0,
) -> bytes:
    """A static program that exits with `status`.

    `extra`: more program headers after the text segment; `interps`: PT_INTERP strings (each
    taken as is: add the NUL yourself), placed at file offset 0x200; `text_size` /
    `text_memsz`: the text segment's p_filesz / p_memsz (default: the file's bytes up to the
    end of the code); `phnum`: e_phnum to claim, whatever the table holds; `padding`: zero
    bytes appended to the table (room for a claimed `phnum`)."""
    count = 1 + len(extra) + len(interps)
    code_at = 64 + 56 * count + padding
    code_at = (code_at + 15) & ~15
    code = exit_code(arch, status)
    interp_at = max(0x200, code_at + len(code))
    blob = b"".join(interps)
    end = interp_at + len(blob) if interps else code_at + len(code)
    text = Segment(
        PT_LOAD, PF_R | PF_X, 0, TEXT,
        end if text_size is None else text_size,
        (end if text_size is None else text_size) if text_memsz is None else text_memsz,
    )  # fmt: skip
    headers = [text, *extra]
    at = interp_at
    for string in interps:
        headers.append(Segment(PT_INTERP, PF_R, at, TEXT + at, len(string), len(string), 1))
        at += len(string)
    elf = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    elf += struct.pack(
        "<HHIQQQIHHHHHH", 2, EM[arch], 1, TEXT + code_at, 64, 0, 0, 64, 56,
        count if phnum is None else phnum, 64, 0, 0,
    )  # fmt: skip
    elf += b"".join(h.pack() for h in headers) + bytes(padding)
    elf += bytes(code_at - len(elf)) + code
    if interps:
        elf += bytes(interp_at - len(elf)) + blob
    return elf


# A -nostdlib program with a zero-initialised array: GNU ld gives aarch64 a bss-only PT_LOAD
# whose p_offset lies past the end of the file (0xfff0 in a 1.6 KiB file).
NOSTDLIB_BSS_SOURCE = {
    "aarch64": r"""
volatile char buf[4096];
void _start(void)
{
    buf[4000] = 7;
    register long x0 __asm__("x0") = buf[4000] * 6 + buf[10];
    register long x8 __asm__("x8") = 94;
    __asm__ volatile("svc 0" : : "r"(x0), "r"(x8));
    for (;;)
        ;
}
""",
    "riscv64": r"""
volatile char buf[4096];
void _start(void)
{
    buf[4000] = 7;
    register long a0 __asm__("a0") = buf[4000] * 6 + buf[10];
    register long a7 __asm__("a7") = 94;
    __asm__ volatile("ecall" : : "r"(a0), "r"(a7));
    for (;;)
        ;
}
""",
}
