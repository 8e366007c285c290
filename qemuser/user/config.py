"""What a user-mode run is asked to do: built by a front end (CLI, binfmt interpreter, execve)."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_STACK_SIZE = 8 * 1024 * 1024  # qemu-user's default guest stack


# eq=False: compared by identity only; every start would compile the generated __eq__.
@dataclass(eq=False)
class RunConfig:
    """One program to run and how: what the options and the environment asked for."""

    arch: str  # a key of qemuser.cpu.CPUS
    program: str  # host path of the guest ELF (the file to load)
    argv: list[bytes]  # the guest's argv, argv[0] included
    env: list[bytes]  # the guest's environment, b"NAME=value" entries, in order
    sysroot: str | None = None  # -L / QEMU_LD_PREFIX: absolute guest paths resolve here first
    cpu_model: str | None = None  # -cpu; None is the arch's default model
    stack_size: int = DEFAULT_STACK_SIZE  # -s
    strace: bool = False  # -strace / -d strace
    log_items: frozenset[str] = field(default_factory=frozenset)  # -d items: in_asm, unimp, page
    log_file: str | None = None  # -D; None logs to stderr
    exec_fd: int | None = None  # binfmt 'O': the kernel's open fd of the binary (AT_EXECFD)
    preserve_argv0: bool = False  # binfmt 'P': sets AT_FLAGS bit 0 as Linux does
    execfn: bytes | None = None  # AT_EXECFN string; default: the program path as given
    gdb: str | None = None  # -g / QEMU_GDB: a TCP port or unix socket path to wait for GDB on
