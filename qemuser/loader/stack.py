"""The initial process stack, laid out as Linux's fs/exec.c and fs/binfmt_elf.c build it.

From the top: a NULL word, the AT_EXECFN string, the environment strings, the argument strings,
the platform string, 16 AT_RANDOM bytes; then, 16-byte aligned, argc, argv[], NULL, envp[],
NULL and the auxiliary vector.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from qemuser.loader.memory import AddressSpace

AT_NULL = 0
AT_IGNORE = 1
AT_EXECFD = 2
AT_PHDR = 3
AT_PHENT = 4
AT_PHNUM = 5
AT_PAGESZ = 6
AT_BASE = 7
AT_FLAGS = 8
AT_ENTRY = 9
AT_NOTELF = 10
AT_UID = 11
AT_EUID = 12
AT_GID = 13
AT_EGID = 14
AT_PLATFORM = 15
AT_HWCAP = 16
AT_CLKTCK = 17
AT_SECURE = 23
AT_BASE_PLATFORM = 24
AT_RANDOM = 25
AT_HWCAP2 = 26
AT_EXECFN = 31
AT_SYSINFO_EHDR = 33
AT_MINSIGSTKSZ = 51

AT_RSEQ_FEATURE_SIZE = 27
AT_RSEQ_ALIGN = 28

# The order in which fs/binfmt_elf.c's create_elf_tables() writes the vector: the arch's
# ARCH_DLINFO entries first (arm64: AT_SYSINFO_EHDR, AT_MINSIGSTKSZ), AT_EXECFD last but for
# the rseq pair. build_stack sorts what it is given into this order, so that a caller cannot
# get it wrong; a type missing here goes to the end.
KERNEL_AUXV_ORDER = (
    AT_SYSINFO_EHDR, AT_MINSIGSTKSZ, AT_HWCAP, AT_PAGESZ, AT_CLKTCK, AT_PHDR, AT_PHENT,
    AT_PHNUM, AT_BASE, AT_FLAGS, AT_ENTRY, AT_UID, AT_EUID, AT_GID, AT_EGID, AT_SECURE,
    AT_RANDOM, AT_HWCAP2, AT_EXECFN, AT_PLATFORM, AT_BASE_PLATFORM, AT_EXECFD,
    AT_RSEQ_FEATURE_SIZE, AT_RSEQ_ALIGN,
)  # fmt: skip
_ORDER_INDEX = {key: i for i, key in enumerate(KERNEL_AUXV_ORDER)}

AUXV_NAMES = {
    value: name
    for name, value in globals().items()
    if name.startswith("AT_") and isinstance(value, int)
}

# Placeholders in the auxv list that build_stack fills with the addresses it chooses.
PLACEHOLDER_RANDOM = -1
PLACEHOLDER_EXECFN = -2
PLACEHOLDER_PLATFORM = -3


# eq=False: compared by identity, and every start would compile the generated __eq__/__hash__
# (dataclass methods are compiled at import, ~0.3 ms each). Not frozen for the same reason (a
# frozen dataclass compiles __setattr__, __delattr__ and a slower __init__): nothing assigns
# to it once built.
@dataclass(eq=False)
class InitialStack:
    """Where build_stack put the guest's argv, envp and auxv."""

    sp: int
    argv_addr: int
    envp_addr: int
    auxv_addr: int
    auxv: tuple[tuple[int, int], ...]
    strings_start: int  # lowest address of the argument strings (for /proc/self/cmdline)
    args_end: int
    env_start: int
    env_end: int


def _push_strings(mem: AddressSpace, top: int, strings: list[bytes]) -> tuple[int, list[int]]:
    """Copy NUL-terminated strings down from `top`, the last one highest, as the kernel's
    copy_strings does; returns the new top and each string's address, in order."""
    block = b"".join(s + b"\0" for s in strings)  # one write: an environment has ~100 strings
    start = top - len(block)
    mem.write_init(start, block)
    addresses = []
    address = start
    for s in strings:
        addresses.append(address)
        address += len(s) + 1
    return start, addresses


def build_stack(
    mem: AddressSpace,
    stack_top: int,
    argv: list[bytes],
    envp: list[bytes],
    auxv: list[tuple[int, int | None]],
    execfn: bytes,
    platform: bytes | None,
    random_bytes: bytes,
) -> InitialStack:
    """Write the initial stack below `stack_top`.

    auxv values may be the PLACEHOLDER_* above, or None for an entry this arch's kernel does
    not give (riscv64 has no AT_HWCAP2); entries are written in the kernel's order.
    """
    p = stack_top - 8  # Linux keeps a NULL pointer at the very top
    p -= len(execfn) + 1
    execfn_addr = p
    mem.write_init(p, execfn + b"\0")

    env_end = p
    p, env_addrs = _push_strings(mem, p, envp)
    env_start = args_end = p
    p, arg_addrs = _push_strings(mem, p, argv)
    strings_start = p

    p &= ~15
    platform_addr = 0
    if platform is not None:
        p -= len(platform) + 1
        platform_addr = p
        mem.write_init(p, platform + b"\0")
    p -= 16
    random_addr = p
    mem.write_init(p, random_bytes[:16])

    resolved = []
    for key, value in sorted(auxv, key=lambda entry: _ORDER_INDEX.get(entry[0], 1 << 16)):
        if value is None:
            continue
        if value == PLACEHOLDER_RANDOM:
            value = random_addr
        elif value == PLACEHOLDER_EXECFN:
            value = execfn_addr
        elif value == PLACEHOLDER_PLATFORM:
            if not platform_addr:
                continue
            value = platform_addr
        resolved.append((key, value))
    resolved.append((AT_NULL, 0))

    words = [len(argv), *arg_addrs, 0, *env_addrs, 0]
    for key, value in resolved:
        words += [key, value]
    sp = (p - 8 * len(words)) & ~15
    # elf_addr_t words: a corrupt e_entry plus the load bias wraps, as in the kernel
    mem.write_init(sp, struct.pack(f"<{len(words)}Q", *(w & 0xFFFF_FFFF_FFFF_FFFF for w in words)))
    argv_addr = sp + 8
    envp_addr = argv_addr + 8 * (len(argv) + 1)
    auxv_addr = envp_addr + 8 * (len(envp) + 1)
    return InitialStack(
        sp=sp,
        argv_addr=argv_addr,
        envp_addr=envp_addr,
        auxv_addr=auxv_addr,
        auxv=tuple(resolved),
        strings_start=strings_start,
        args_end=args_end,
        env_start=env_start,
        env_end=env_end,
    )
