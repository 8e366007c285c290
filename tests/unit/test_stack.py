"""The initial stack: the layout of fs/binfmt_elf.c's create_elf_tables, word by word."""

import struct

import pytest

from qemuser.cpu import CPUS
from qemuser.loader.memory import PROT_READ, PROT_WRITE, AddressSpace
from qemuser.loader.stack import (
    AT_BASE,
    AT_EXECFD,
    AT_EXECFN,
    AT_HWCAP,
    AT_HWCAP2,
    AT_MINSIGSTKSZ,
    AT_NULL,
    AT_PAGESZ,
    AT_PLATFORM,
    AT_RANDOM,
    PLACEHOLDER_EXECFN,
    PLACEHOLDER_PLATFORM,
    PLACEHOLDER_RANDOM,
    build_stack,
)

PAGE = 4096
STACK_TOP = 0x4000_0000


@pytest.fixture
def mem() -> AddressSpace:
    space = AddressSpace(CPUS["riscv64"].new_engine(), PAGE, mmap_top=0x3000_0000)
    space.map(STACK_TOP - 16 * PAGE, 16 * PAGE, PROT_READ | PROT_WRITE)
    return space


def words(mem: AddressSpace, address: int, count: int) -> list[int]:
    return list(struct.unpack(f"<{count}Q", mem.read(address, 8 * count)))


@pytest.mark.parametrize("argv0", [b"p", b"prog", b"a-longer-program-name"])
def test_layout_from_sp_up(mem: AddressSpace, argv0: bytes) -> None:
    argv = [argv0, b"one", b""]
    envp = [b"A=1", b"LONGER=value"]
    auxv = [
        # given out of order, with a None entry (not given on this arch) and the placeholders
        (AT_EXECFN, PLACEHOLDER_EXECFN),
        (AT_PAGESZ, PAGE),
        (AT_HWCAP2, None),
        (AT_RANDOM, PLACEHOLDER_RANDOM),
        (AT_EXECFD, 5),
        (AT_HWCAP, 0x112D),
        (AT_PLATFORM, PLACEHOLDER_PLATFORM),
        (AT_MINSIGSTKSZ, 5120),
        (AT_BASE, 0),
    ]
    random = bytes(range(16))
    stack = build_stack(mem, STACK_TOP, argv, envp, auxv, b"/bin/prog", b"aarch64", random)

    assert stack.sp % 16 == 0
    argc, *rest = words(mem, stack.sp, 1 + 4 + 3)
    assert argc == 3
    arg_ptrs, env_ptrs = rest[:3], rest[4:6]
    assert rest[3] == 0 and rest[6] == 0
    assert [mem.read_cstr(p) for p in arg_ptrs] == argv
    assert [mem.read_cstr(p) for p in env_ptrs] == envp
    # strings packed: argv, then envp, then AT_EXECFN's copy, then a NULL word at the top
    assert arg_ptrs[1] == arg_ptrs[0] + len(argv0) + 1
    assert env_ptrs[0] == arg_ptrs[2] + 1
    execfn_address = env_ptrs[1] + len(b"LONGER=value") + 1
    assert mem.read_cstr(execfn_address) == b"/bin/prog"
    assert execfn_address + len(b"/bin/prog") + 1 == STACK_TOP - 8
    assert words(mem, STACK_TOP - 8, 1) == [0]

    vector = words(mem, stack.auxv_addr, 2 * 9)
    pairs = list(zip(vector[::2], vector[1::2]))
    # the kernel's order: ARCH_DLINFO first, AT_EXECFD last; AT_HWCAP2 left out
    assert [key for key, _ in pairs] == [
        AT_MINSIGSTKSZ, AT_HWCAP, AT_PAGESZ, AT_BASE, AT_RANDOM, AT_EXECFN, AT_PLATFORM,
        AT_EXECFD, AT_NULL,
    ]  # fmt: skip
    values = dict(pairs)
    assert values[AT_EXECFN] == execfn_address
    assert mem.read(values[AT_RANDOM], 16) == random
    assert mem.read_cstr(values[AT_PLATFORM]) == b"aarch64"
    # platform string and random bytes sit between the vectors and the argument strings,
    # below the strings aligned down to 16
    assert values[AT_PLATFORM] + len(b"aarch64") + 1 <= arg_ptrs[0] & ~15
    assert values[AT_RANDOM] + 16 == values[AT_PLATFORM]
    assert stack.auxv_addr + 8 * len(vector) <= values[AT_RANDOM]
    assert stack.argv_addr == stack.sp + 8
    assert stack.envp_addr == stack.argv_addr + 8 * 4


def test_no_platform_leaves_the_entry_out(mem: AddressSpace) -> None:
    auxv = [(AT_PLATFORM, PLACEHOLDER_PLATFORM), (AT_RANDOM, PLACEHOLDER_RANDOM)]
    stack = build_stack(mem, STACK_TOP, [b"x"], [], auxv, b"x", None, bytes(16))
    assert [key for key, _ in stack.auxv] == [AT_RANDOM, AT_NULL]
