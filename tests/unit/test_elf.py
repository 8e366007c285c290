"""The ELF loader on small hand-built ELF files: what lands where, with which protection."""

import struct
from pathlib import Path

import pytest

from qemuser.cpu import CPUS
from qemuser.loader.elf import LoadError, check_arch, load_image, read_elf_info
from qemuser.loader.memory import PROT_EXEC, PROT_READ, PROT_WRITE, AddressSpace

PAGE = 4096
PT_LOAD, PT_GNU_STACK = 1, 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4
EM_AARCH64, EM_RISCV = 183, 243


def build_elf(
    segments: list[tuple[int, int, int, int, int, int]],
    body: bytes,
    *,
    etype: int = 2,
    machine: int = EM_AARCH64,
    elf_class: int = 2,
) -> bytes:
    """An ELF64 header, program headers (type, offset, vaddr, filesz, memsz, flags), `body`
    placed from file offset 0 (the headers overwrite its start)."""
    phoff, phentsize = 64, 56
    header = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    header += struct.pack(
        "<HHIQQQIHHHHHH", etype, machine, 1, 0x40_1000, phoff, 0, 0, 64, phentsize,
        len(segments), 64, 0, 0,
    )  # fmt: skip
    phdrs = b"".join(
        struct.pack("<IIQQQQQQ", kind, flags, offset, vaddr, vaddr, filesz, memsz, PAGE)
        for kind, offset, vaddr, filesz, memsz, flags in segments
    )
    head = header + phdrs
    return head + body[len(head) :]


@pytest.fixture
def mem() -> AddressSpace:
    return AddressSpace(CPUS["aarch64"].new_engine(), PAGE, mmap_top=0x7000_0000)


def load(mem: AddressSpace, tmp_path: Path, data: bytes, base: int | None = None):
    path = tmp_path / "prog"
    path.write_bytes(data)
    path.chmod(0o755)  # execve refuses a file without execute permission
    info = read_elf_info(str(path))
    return load_image(mem, info, data, base, str(path))


def test_segments_pages_protections_and_bss(mem: AddressSpace, tmp_path: Path) -> None:
    body = bytes(range(256)) * 32  # 8 KiB of recognisable file bytes
    data = build_elf(
        [
            (PT_LOAD, 0, 0x40_0000, 0x1800, 0x1800, PF_R | PF_X),  # text: pages 0x400000-1
            # data shares text's second page (file offset 0x1900 = address 0x401900),
            # 0x100 file bytes then bss to 0x403000
            (PT_LOAD, 0x1900, 0x40_1900, 0x100, 0x1700, PF_R | PF_W),
            (PT_GNU_STACK, 0, 0, 0, 0, PF_R | PF_W),
        ],
        body,
    )
    image = load(mem, tmp_path, data)
    assert [(m.start, m.end, m.prot) for m in mem.mappings()] == [
        (0x40_0000, 0x40_1000, PROT_READ | PROT_EXEC),
        # the shared page takes the later segment's protection, as binfmt_elf's MAP_FIXED does
        (0x40_1000, 0x40_3000, PROT_READ | PROT_WRITE),
    ]
    assert image.end == 0x40_3000 and image.base == 0
    assert image.phdr == 0x40_0040
    # text's own bytes are still there in the shared page (same file page)
    assert mem.read(0x40_1000, 16) == data[0x1000:0x1010]
    assert mem.read(0x40_1900, 0x100) == data[0x1900:0x1A00]
    # bss: zero from the end of the file bytes, the rest of that page and the next page
    assert mem.read(0x40_1A00, 0x1600) == bytes(0x1600)
    assert not read_elf_info(str(tmp_path / "prog")).exec_stack


def test_segment_without_bss_shows_the_file_to_the_end_of_its_page(
    mem: AddressSpace, tmp_path: Path
) -> None:
    body = bytes(range(256)) * 16
    data = build_elf([(PT_LOAD, 0, 0x40_0000, 0x234, 0x234, PF_R)], body)
    load(mem, tmp_path, data)
    assert mem.read(0x40_0000, PAGE) == data[:PAGE]


def test_position_independent_image_goes_top_down_aligned(
    mem: AddressSpace, tmp_path: Path
) -> None:
    data = build_elf(
        [(PT_LOAD, 0, 0, 0x1800, 0x1800, PF_R | PF_X), (PT_LOAD, 0x1800, 0x2800, 8, 16, 6)],
        bytes(0x2000),
        etype=3,
    )
    image = load(mem, tmp_path, data)
    assert image.base % PAGE == 0
    assert image.end == 0x7000_0000  # no gap left above it
    placed = load(AddressSpace(CPUS["aarch64"].new_engine(), PAGE, 0x7000_0000), tmp_path, data,
                  base=0x5555_0000)  # fmt: skip
    assert placed.base == 0x5555_0000 and placed.entry == 0x5555_0000 + 0x40_1000


def test_misaligned_segment_is_refused(mem: AddressSpace, tmp_path: Path) -> None:
    data = build_elf([(PT_LOAD, 0x10, 0x40_0000, 0x10, 0x10, PF_R)], bytes(0x100))
    with pytest.raises(LoadError, match="file offset and address disagree"):
        load(mem, tmp_path, data)


@pytest.mark.parametrize(
    ("machine", "elf_class", "message"),
    [
        (EM_RISCV, 2, "is built for RISC-V, not aarch64; run it with qemuser-riscv64"),
        (EM_RISCV, 1, "is built for RISC-V (32-bit), not aarch64"),
        (40, 1, "is built for ARM (32-bit), not aarch64"),
        (62, 2, "is built for x86-64, not aarch64"),
    ],
)
def test_wrong_machine(tmp_path: Path, machine: int, elf_class: int, message: str) -> None:
    path = tmp_path / "other"
    if elf_class == 2:
        path.write_bytes(build_elf([(PT_LOAD, 0, 0x40_0000, 0x100, 0x100, PF_R)], bytes(0x100),
                                   machine=machine))  # fmt: skip
        path.chmod(0o755)  # execve refuses a file without execute permission
    else:  # an ELF32 header with no program headers is enough to name the machine
        header = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
        header += struct.pack("<HHIIIIIHHHHHH", 2, machine, 1, 0, 52, 0, 0, 52, 32, 1, 40, 0, 0)
        phdr = struct.pack("<IIIIIIII", PT_LOAD, 0, 0x1_0000, 0x1_0000, 0x54, 0x54, PF_R, PAGE)
        path.write_bytes(header + phdr)
        path.chmod(0o755)  # execve refuses a file without execute permission
    info = read_elf_info(str(path))
    with pytest.raises(LoadError) as error:
        check_arch(info, CPUS["aarch64"])
    assert str(error.value) == f"'{path}' {message}"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ((0x36, struct.pack("<H", 40)), "is a truncated or corrupt ELF file"),  # e_phentsize
        ((0x10, struct.pack("<H", 1)), "is not an executable ELF file (ET_REL)"),
        ((0x20, struct.pack("<Q", 1 << 40)), "is a truncated ELF file"),  # e_phoff past the end
    ],
)
def test_corrupt_headers(tmp_path: Path, patch: tuple[int, bytes], message: str) -> None:
    data = bytearray(build_elf([(PT_LOAD, 0, 0x40_0000, 0x100, 0x100, PF_R)], bytes(0x100)))
    offset, value = patch
    data[offset : offset + len(value)] = value
    path = tmp_path / "bad"
    path.write_bytes(bytes(data))
    path.chmod(0o755)  # execve refuses a file without execute permission
    with pytest.raises(LoadError) as error:
        read_elf_info(str(path))
    assert str(error.value) == f"'{path}' {message}"


def test_big_endian_headers_are_read_in_their_byte_order(tmp_path: Path) -> None:
    header = b"\x7fELF" + bytes([2, 2, 1]) + bytes(9)  # ELFCLASS64, ELFDATA2MSB
    header += struct.pack(">HHIQQQIHHHHHH", 2, EM_AARCH64, 1, 0x40_1000, 64, 0, 0, 64, 56, 1,
                          64, 0, 0)  # fmt: skip
    phdr = struct.pack(">IIQQQQQQ", PT_LOAD, PF_R | PF_X, 0, 0x40_0000, 0x40_0000, 0x100, 0x100,
                       PAGE)  # fmt: skip
    path = tmp_path / "be"
    path.write_bytes(header + phdr + bytes(0x100 - len(header + phdr)))
    path.chmod(0o755)  # execve refuses a file without execute permission
    info = read_elf_info(str(path))
    assert (info.machine, info.entry, info.segments[0][2]) == (EM_AARCH64, 0x40_1000, 0x40_0000)
    with pytest.raises(LoadError) as error:
        check_arch(info, CPUS["aarch64"])
    assert str(error.value) == f"'{path}' is built for AArch64 (big-endian), not aarch64"


@pytest.mark.parametrize(
    ("ident", "message"),
    [
        (bytes([3, 1, 1]), "is a truncated or corrupt ELF file"),  # no such EI_CLASS
        (bytes([2, 0, 1]), "is a truncated or corrupt ELF file"),  # no such EI_DATA
    ],
)
def test_bad_ident_is_one_line(tmp_path: Path, ident: bytes, message: str) -> None:
    data = bytearray(build_elf([(PT_LOAD, 0, 0x40_0000, 0x100, 0x100, PF_R)], bytes(0x100)))
    data[4:7] = ident
    path = tmp_path / "bad"
    path.write_bytes(bytes(data))
    path.chmod(0o755)  # execve refuses a file without execute permission
    with pytest.raises(LoadError) as error:
        read_elf_info(str(path))
    assert str(error.value) == f"'{path}' {message}"


def test_text_segments_keep_self_modifying_code_correct(mem: AddressSpace, tmp_path: Path) -> None:
    """The loader marks read-only text for the engine (no TLB walk per translated block); a
    range so marked must still drop a translation that a guest store overwrites, also after the
    patched code was translated again (the second patch)."""
    from unicorn.arm64_const import UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2

    mov_w0 = 0x5280_0000  # mov w0, #imm16 (imm16 at bit 5)
    store_w1_at_x2 = 0xB900_0041  # str w1, [x2]
    patcher, target = 0x40_0800, 0x40_1000
    body = bytearray(0x2000)
    body[0x800:0x804] = struct.pack("<I", store_w1_at_x2)
    body[0x1000:0x1004] = struct.pack("<I", mov_w0 | 7 << 5)
    data = build_elf([(PT_LOAD, 0, 0x40_0000, 0x2000, 0x2000, PF_R | PF_X)], bytes(body))
    load(mem, tmp_path, data)
    uc = mem.uc
    uc.emu_start(target, target + 4)
    assert uc.reg_read(UC_ARM64_REG_X0) == 7
    mem.protect(0x40_0000, 2 * PAGE, PROT_READ | PROT_WRITE | PROT_EXEC)
    for value in (8, 9):
        uc.reg_write(UC_ARM64_REG_X1, mov_w0 | value << 5)
        uc.reg_write(UC_ARM64_REG_X2, target)
        uc.emu_start(patcher, patcher + 4)
        uc.emu_start(target, target + 4)
        assert uc.reg_read(UC_ARM64_REG_X0) == value
