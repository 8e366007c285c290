"""AddressSpace: Linux-like mappings over unicorn memory with exact page protections."""

import pytest

from qemuser.cpu import CPUS
from qemuser.loader.memory import (
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    AddressSpace,
    GuestFault,
)

PAGE = 4096
TOP = 0x7000_0000


@pytest.fixture
def mem() -> AddressSpace:
    spec = CPUS["aarch64"]
    return AddressSpace(spec.new_engine(), PAGE, mmap_top=TOP, mmap_bottom=0x1000_0000)


def layout(mem: AddressSpace) -> list[tuple[int, int, int]]:
    return [(m.start, m.end, m.prot) for m in mem.mappings()]


def test_map_split_and_merge_back(mem: AddressSpace) -> None:
    rw = PROT_READ | PROT_WRITE
    mem.map(0x2000_0000, 4 * PAGE, rw)
    assert mem.protect(0x2000_0000 + PAGE, PAGE, PROT_READ)
    assert layout(mem) == [
        (0x2000_0000, 0x2000_1000, rw),
        (0x2000_1000, 0x2000_2000, PROT_READ),
        (0x2000_2000, 0x2000_4000, rw),
    ]
    assert mem.protect(0x2000_1000, PAGE, rw)
    assert layout(mem) == [(0x2000_0000, 0x2000_4000, rw)]  # merged, as /proc/self/maps shows


def test_protect_refuses_a_range_with_a_hole(mem: AddressSpace) -> None:
    mem.map(0x2000_0000, PAGE, PROT_READ)
    assert not mem.protect(0x2000_0000, 2 * PAGE, PROT_NONE)
    assert layout(mem) == [(0x2000_0000, 0x2000_1000, PROT_READ)]


def test_unmap_the_middle_keeps_both_ends_and_their_data(mem: AddressSpace) -> None:
    mem.map(0x2000_0000, 3 * PAGE, PROT_READ | PROT_WRITE)
    mem.write(0x2000_0000, b"a" * 3 * PAGE)
    mem.unmap(0x2000_1000, PAGE)
    assert [(m.start, m.end) for m in mem.mappings()] == [
        (0x2000_0000, 0x2000_1000),
        (0x2000_2000, 0x2000_3000),
    ]
    assert mem.read(0x2000_2000, 2) == b"aa"
    with pytest.raises(GuestFault) as fault:
        mem.read(0x2000_1000, 1)
    assert not fault.value.mapped


def test_accessors_honour_protections(mem: AddressSpace) -> None:
    mem.map(0x2000_0000, PAGE, PROT_READ)
    mem.map(0x2000_1000, PAGE, PROT_NONE)
    assert mem.read(0x2000_0000, 4) == b"\0\0\0\0"
    with pytest.raises(GuestFault) as fault:
        mem.write(0x2000_0000, b"x")
    assert fault.value.mapped and fault.value.write
    with pytest.raises(GuestFault):
        mem.read(0x2000_0FFE, 4)  # runs into the PROT_NONE page
    mem.write_init(0x2000_0000, b"loader")  # the kernel's own writes ignore protections
    assert mem.read(0x2000_0000, 6) == b"loader"


def test_read_cstr_across_pages_and_into_a_hole(mem: AddressSpace) -> None:
    mem.map(0x2000_0000, 2 * PAGE, PROT_READ | PROT_WRITE)
    mem.write(0x2000_0FFC, b"abcdefgh\0")
    assert mem.read_cstr(0x2000_0FFC) == b"abcdefgh"
    mem.write(0x2000_1FFC, b"wxyz")
    with pytest.raises(GuestFault):
        mem.read_cstr(0x2000_1FFC)


def test_find_free_goes_top_down_and_takes_free_hints(mem: AddressSpace) -> None:
    assert mem.find_free(PAGE) == TOP - PAGE
    mem.map(TOP - 2 * PAGE, 2 * PAGE, PROT_READ)
    assert mem.find_free(PAGE) == TOP - 3 * PAGE
    assert mem.find_free(PAGE, hint=0x3000_0123) == 0x3000_0000  # rounded down, as Linux
    assert mem.find_free(PAGE, hint=TOP - PAGE) == TOP - 3 * PAGE  # busy: ignored
    mem.map(TOP - 5 * PAGE, PAGE, PROT_READ)  # leaves a 2-page hole below the first mapping
    assert mem.find_free(2 * PAGE) == TOP - 4 * PAGE
    assert mem.find_free(3 * PAGE) == TOP - 8 * PAGE


def test_move_private_copies_and_unmaps(mem: AddressSpace) -> None:
    mem.map(0x2000_0000, PAGE, PROT_READ | PROT_WRITE)
    mem.write(0x2000_0000, b"moved")
    mem.move(0x2000_0000, PAGE, 0x3000_0000, 2 * PAGE)
    assert mem.read(0x3000_0000, 5) == b"moved"
    assert mem.read(0x3000_1000, 1) == b"\0"
    assert mem.find(0x2000_0000) is None


def test_move_shared_keeps_the_host_pages(mem: AddressSpace) -> None:
    from qemuser.syscalls.mm import host_shared_map

    host = host_shared_map(PAGE, -1, 0, True)
    mem.map(0x2000_0000, PAGE, PROT_READ | PROT_WRITE, host_address=host)
    mem.write(0x2000_0000, b"shared")
    mem.move(0x2000_0000, PAGE, 0x3000_0000, 2 * PAGE)
    moved = mem.find(0x3000_0000)
    assert moved is not None and moved.shared and moved.size == 2 * PAGE
    assert mem.read(0x3000_0000, 6) == b"shared"
    mem.unmap(0x3000_0000, 2 * PAGE)


def test_guest_code_runs_only_from_executable_pages(mem: AddressSpace) -> None:
    from unicorn import UcError
    from unicorn.arm64_const import UC_ARM64_REG_X0

    code = bytes.fromhex("e0008052")  # mov w0, #7
    mem.map(0x2000_0000, PAGE, PROT_READ | PROT_EXEC)
    mem.map(0x2000_1000, PAGE, PROT_READ | PROT_WRITE)
    mem.write_init(0x2000_0000, code)
    mem.write_init(0x2000_1000, code)
    mem.uc.emu_start(0x2000_0000, 0x2000_0004)
    assert mem.uc.reg_read(UC_ARM64_REG_X0) == 7
    with pytest.raises(UcError):
        mem.uc.emu_start(0x2000_1000, 0x2000_1004)
    assert mem.last_fault is not None
    assert mem.last_fault.address == 0x2000_1000 and mem.last_fault.mapped


def test_write_only_pages_read_as_well(mem: AddressSpace) -> None:
    """arm64 and riscv have no write-only pages: PROT_WRITE reads too, as on Linux."""
    mem.map(0x2000_0000, PAGE, PROT_WRITE)
    mem.write(0x2000_0000, b"wo")
    assert mem.read(0x2000_0000, 2) == b"wo"
    assert mem.mappings()[0].prot == PROT_WRITE  # /proc/self/maps still says -w-p


def test_reservations_get_memory_only_when_made_accessible(mem: AddressSpace) -> None:
    huge = 1 << 40  # far more than the host would lend in one piece
    mem.map(0x1_0000_0000, huge, PROT_NONE)
    middle = 0x1_0000_0000 + huge // 2
    assert mem.protect(middle, PAGE, PROT_READ | PROT_WRITE)
    mem.write(middle, b"committed")
    assert mem.protect(middle, PAGE, PROT_NONE)
    assert mem.protect(middle, PAGE, PROT_READ)
    assert mem.read(middle, 9) == b"committed"
    assert [(m.backed, m.prot) for m in mem.mappings()] == [
        (False, PROT_NONE),
        (True, PROT_READ),
        (False, PROT_NONE),
    ]
    mem.unmap(0x1_0000_0000, huge)
    assert mem.mappings() == []


# ---- guest memory as host memory (host_span: read/write go straight to the host kernel) ----


def test_host_span_is_the_guest_bytes_both_ways(mem: AddressSpace) -> None:
    import ctypes

    mem.map(0x2000_0000, 2 * PAGE, PROT_READ | PROT_WRITE)
    mem.write(0x2000_0FFE, b"guest")
    host = mem.host_span(0x2000_0FFE, 5, write=False)
    assert host and ctypes.string_at(host, 5) == b"guest"
    ctypes.memmove(mem.host_span(0x2000_1000, 4, write=True), b"HOST", 4)
    assert mem.read(0x2000_0FFE, 6) == b"guHOST"


def test_host_span_refuses_what_the_guest_may_not_touch(mem: AddressSpace) -> None:
    mem.map(0x2000_0000, PAGE, PROT_READ)
    mem.map(0x2000_1000, PAGE, PROT_NONE)
    assert mem.host_span(0x2000_0000, PAGE, write=False)
    with pytest.raises(GuestFault) as read_only:
        mem.host_span(0x2000_0000, 4, write=True)
    assert read_only.value.mapped
    with pytest.raises(GuestFault):
        mem.host_span(0x2000_0FFC, 8, write=False)  # runs into PROT_NONE
    with pytest.raises(GuestFault) as unmapped:
        mem.host_span(0x2000_2000, 4, write=False)
    assert not unmapped.value.mapped
    # a span the last call made fast is forgotten when protections change
    mem.map(0x3000_0000, PAGE, PROT_READ | PROT_WRITE)
    assert mem.host_span(0x3000_0000, 8, write=True)
    assert mem.protect(0x3000_0000, PAGE, PROT_READ)
    with pytest.raises(GuestFault):
        mem.host_span(0x3000_0000, 8, write=True)
    mem.unmap(0x3000_0000, PAGE)
    with pytest.raises(GuestFault):
        mem.host_span(0x3000_0000, 8, write=False)


def test_host_span_leaves_code_and_split_buffers_to_copies(mem: AddressSpace) -> None:
    """0: accessible, but the bytes must go through AddressSpace.write (which drops stale
    translations) or span two host pieces."""
    mem.map(0x2000_0000, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC)
    assert mem.host_span(0x2000_0000, 8, write=True) == 0
    assert mem.host_span(0x2000_0000, 8, write=False)  # reading code is fine
    mem.map(0x3000_0000, PAGE, PROT_READ | PROT_WRITE)
    mem.map(0x3000_1000, PAGE, PROT_READ | PROT_WRITE)  # made apart: another host piece
    assert mem.host_span(0x3000_0FFC, 8, write=True) == 0
    mem.write(0x3000_0FFC, b"12345678")
    assert mem.read(0x3000_0FFC, 8) == b"12345678"


def test_rewritten_code_runs_new(mem: AddressSpace) -> None:
    from unicorn.arm64_const import UC_ARM64_REG_X0

    mov_w0_7, mov_w0_9 = bytes.fromhex("e0008052"), bytes.fromhex("20018052")
    branch_to_next_page = bytes.fromhex("ff030014")  # b .+0x1000-4
    mem.map(0x2000_0000, 2 * PAGE, PROT_READ | PROT_WRITE | PROT_EXEC)
    mem.write(0x2000_0000, mov_w0_7 + branch_to_next_page)
    # stop in the next page, so that unicorn keeps the translation of the first one
    mem.uc.emu_start(0x2000_0000, 0x2000_1000)
    assert mem.uc.reg_read(UC_ARM64_REG_X0) == 7
    mem.write(0x2000_0000, mov_w0_9)  # as a read() into the buffer would
    mem.uc.emu_start(0x2000_0000, 0x2000_1000)
    assert mem.uc.reg_read(UC_ARM64_REG_X0) == 9


def test_partial_unmap_keeps_the_ends_host_pages(mem: AddressSpace) -> None:
    import ctypes

    mem.map(0x2000_0000, 3 * PAGE, PROT_READ | PROT_WRITE)
    mem.write(0x2000_0000, b"a" * PAGE + b"b" * PAGE + b"c" * PAGE)
    mem.unmap(0x2000_1000, PAGE)
    assert ctypes.string_at(mem.host_span(0x2000_2000, PAGE, write=False), 2) == b"cc"
    assert ctypes.string_at(mem.host_span(0x2000_0000, PAGE, write=False), 2) == b"aa"
