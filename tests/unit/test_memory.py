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
