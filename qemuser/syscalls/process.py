"""A guest process: its CPU, address space, files, and the loop that runs it."""

from __future__ import annotations

import errno
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import TextIO

from unicorn import UC_HOOK_INTR, Uc, UcError
from unicorn.unicorn_const import UC_MEM_FETCH, UC_MEM_WRITE

from qemuser.cpu import CPUS, CpuModel, CpuSpec
from qemuser.loader.elf import (
    ElfInfo,
    LoadedImage,
    LoadError,
    check_arch,
    load_image,
    read_elf_info,
)
from qemuser.loader.memory import STOP_ADDRESS, AddressSpace, GuestFault
from qemuser.loader.stack import (
    AT_BASE,
    AT_CLKTCK,
    AT_EGID,
    AT_ENTRY,
    AT_EUID,
    AT_EXECFD,
    AT_EXECFN,
    AT_FLAGS,
    AT_GID,
    AT_HWCAP,
    AT_HWCAP2,
    AT_MINSIGSTKSZ,
    AT_PAGESZ,
    AT_PHDR,
    AT_PHENT,
    AT_PHNUM,
    AT_PLATFORM,
    AT_RANDOM,
    AT_SECURE,
    AT_UID,
    PLACEHOLDER_EXECFN,
    PLACEHOLDER_PLATFORM,
    PLACEHOLDER_RANDOM,
    InitialStack,
    build_stack,
)
from qemuser.syscalls.abi.fcntl import OpenFlagCodec
from qemuser.syscalls.config import RunConfig
from qemuser.syscalls.linux import LINUX_ARCHES, LinuxArch, hwcaps
from qemuser.syscalls.numbers import numbers_for
from qemuser.syscalls.registry import MASK64, REGISTRY, SyscallDef, format_call

AT_FLAGS_PRESERVE_ARGV0 = 1


class GuestExit(Exception):
    """The guest process ended (exit_group, or a fatal signal)."""


@dataclass
class ExitState:
    status: int | None = None  # exit status
    signal: int | None = None  # killed by this signal
    core: bool = False


@dataclass
class FatalSignal:
    signo: int
    code: int = 0
    address: int = 0


# Signals whose default action dumps core (man 7 signal).
CORE_SIGNALS = frozenset(
    {
        signal.SIGQUIT, signal.SIGILL, signal.SIGTRAP, signal.SIGABRT, signal.SIGBUS,
        signal.SIGFPE, signal.SIGSEGV, signal.SIGXCPU, signal.SIGXFSZ, signal.SIGSYS,
    }
)


@dataclass
class Process:
    config: RunConfig
    spec: CpuSpec = field(init=False)
    model: CpuModel = field(init=False)
    linux: LinuxArch = field(init=False)
    uc: Uc = field(init=False)
    mem: AddressSpace = field(init=False)
    table: dict[int, SyscallDef] = field(init=False)
    exit: ExitState = field(default_factory=ExitState)
    log: TextIO = field(default=sys.stderr)
    exe_path: str = ""  # host path of the running program (for /proc/self/exe)
    image: LoadedImage | None = None
    interp: LoadedImage | None = None
    stack: InitialStack | None = None
    reported_unknown: set[int] = field(default_factory=set)
    clear_child_tid: int = 0
    robust_list: tuple[int, int] = (0, 0)
    umask_value: int = 0o022
    stack_low: int = 0

    def __post_init__(self) -> None:
        self.spec = CPUS[self.config.arch]
        try:
            self.model = self.spec.model(self.config.cpu_model)
        except KeyError:
            raise LoadError(
                f"unknown CPU model '{self.config.cpu_model}' for {self.spec.name} "
                f"(try -cpu help)"
            ) from None
        self.linux = LINUX_ARCHES[self.spec.name]
        self.uc = self.spec.new_engine(self.model)
        self.mem = AddressSpace(self.uc, self.spec.page_size, self.linux.mmap_top)
        numbers = numbers_for(self.spec.name)
        self.table = {nr: REGISTRY[name] for name, nr in numbers.items() if name in REGISTRY}
        self.names_by_number = {nr: name for name, nr in numbers.items()}
        self.pid = os.getpid()
        self._sys = self.spec.syscall
        self._arg_regs = list(self.spec.syscall.args)
        self.uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        self.pending_fatal: FatalSignal | None = None
        self.host_fd_reserved: set[int] = set()
        self.tid = self.pid
        self.open_codec = OpenFlagCodec(self.spec.name)
        program_name = os.path.basename(self.config.argv[0]) if self.config.argv else b""
        self.thread_name: bytes = program_name[:15] if isinstance(program_name, bytes) else b""
        self.umask_value = os.umask(0o022)
        os.umask(self.umask_value)

    # ---- paths -----------------------------------------------------------------------------

    def host_path(self, path: bytes) -> bytes:
        """Where a guest path lies on the host: absolute paths inside the sysroot first."""
        root = self.config.sysroot
        if root and path.startswith(b"/"):
            candidate = os.fsencode(root).rstrip(b"/") + path
            if os.path.lexists(candidate):
                return candidate
        return path

    def open_special(self, path: bytes, flags: int) -> int | None:
        """Files the kernel synthesises for the process itself (/proc/self/maps, …): an fd to
        their contents as this guest should see them, or None for an ordinary path."""
        from qemuser.syscalls.procfs import synthetic_file

        data = synthetic_file(self, path)
        if data is None:
            return None
        fd = os.memfd_create("qemuser-proc", os.MFD_CLOEXEC if flags & 0o2000000 else 0)
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    # ---- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        cfg = self.config
        info = read_elf_info(cfg.program, cfg.exec_fd)
        check_arch(info, self.spec)
        self.exe_path = os.path.abspath(cfg.program)
        data = self._read_file(cfg.program, cfg.exec_fd)
        base_hint = self.linux.pie_base if info.etype == "ET_DYN" else None
        name = self.exe_path
        self.image = load_image(self.mem, info, data, base_hint, name)
        entry = self.image.entry
        if info.interp is not None:
            interp_path = self.host_path(info.interp)
            try:
                interp_info = read_elf_info(os.fsdecode(interp_path))
            except LoadError as exc:
                hint = "" if cfg.sysroot else " (set a sysroot with -L or QEMU_LD_PREFIX)"
                raise LoadError(
                    f"cannot load interpreter {info.interp.decode(errors='replace')} of "
                    f"'{cfg.program}': {exc}{hint}"
                ) from None
            check_arch(interp_info, self.spec)
            interp_data = self._read_file(interp_info.path, None)
            self.interp = load_image(
                self.mem, interp_info, interp_data, None, os.path.abspath(interp_info.path)
            )
            entry = self.interp.entry
        self._setup_brk(self.image)
        self._setup_stack(info)
        self.uc.reg_write(self.spec.pc, entry)
        self.entry = entry
        if self.config.log_items:
            from qemuser.syscalls.trace import install_logging

            install_logging(self)

    @staticmethod
    def _read_file(path: str, fd: int | None) -> bytes:
        if fd is not None:
            return os.pread(fd, os.fstat(fd).st_size, 0)
        with open(path, "rb") as f:
            return f.read()

    def _setup_brk(self, image: LoadedImage) -> None:
        self.mem.brk_start = self.mem.brk = image.end

    def _setup_stack(self, info: ElfInfo) -> None:
        cfg = self.config
        top = self.linux.stack_top
        size = self.mem.page_align(cfg.stack_size)
        self.stack_low = top - size
        prot = 7 if info.exec_stack else 3
        self.mem.map(self.stack_low, size, prot, "[stack]")
        hwcap, hwcap2 = hwcaps(self.spec, self.uc)
        image = self.image
        assert image is not None
        flags = AT_FLAGS_PRESERVE_ARGV0 if cfg.preserve_argv0 else 0
        auxv: list[tuple[int, int]] = []
        if cfg.exec_fd is not None:
            auxv.append((AT_EXECFD, cfg.exec_fd))
        auxv += [
            (AT_HWCAP, hwcap),
            (AT_PAGESZ, self.spec.page_size),
            (AT_CLKTCK, os.sysconf("SC_CLK_TCK")),
            (AT_PHDR, image.phdr),
            (AT_PHENT, info.phentsize),
            (AT_PHNUM, info.phnum),
            (AT_BASE, self.interp.base if self.interp else 0),
            (AT_FLAGS, flags),
            (AT_ENTRY, image.entry),
            (AT_UID, os.getuid()),
            (AT_EUID, os.geteuid()),
            (AT_GID, os.getgid()),
            (AT_EGID, os.getegid()),
            (AT_SECURE, 0),
            (AT_RANDOM, PLACEHOLDER_RANDOM),
            (AT_HWCAP2, hwcap2),
            (AT_EXECFN, PLACEHOLDER_EXECFN),
            (AT_PLATFORM, PLACEHOLDER_PLATFORM),
        ]
        if self.linux.minsigstksz:
            auxv.append((AT_MINSIGSTKSZ, self.linux.minsigstksz))
        execfn = cfg.execfn if cfg.execfn is not None else os.fsencode(cfg.program)
        self.stack = build_stack(
            self.mem, top, cfg.argv, cfg.env, auxv, execfn, self.linux.platform, os.urandom(16)
        )
        self.uc.reg_write(self.spec.sp, self.stack.sp)

    # ---- running ---------------------------------------------------------------------------

    def run(self) -> ExitState:
        """Run until the guest exits or dies."""
        pc = self.entry
        uc = self.uc
        while True:
            self.mem.last_fault = None
            try:
                uc.emu_start(pc, STOP_ADDRESS)
            except UcError as exc:
                if self.exit.status is not None or self.exit.signal is not None:
                    break
                self.pending_fatal = self._fault_signal(exc)
            except GuestExit:
                break
            if self.exit.status is not None or self.exit.signal is not None:
                break
            if self.pending_fatal is not None:
                self.die(self.pending_fatal)
                break
            pc = uc.reg_read(self.spec.pc)
        return self.exit

    def _fault_signal(self, exc: UcError) -> FatalSignal:
        """The signal Linux would send for the fault that stopped unicorn."""
        fault = self.mem.last_fault
        if fault is not None:
            code = 2 if fault.mapped else 1  # SEGV_ACCERR / SEGV_MAPERR
            return FatalSignal(signal.SIGSEGV, code, fault.address)
        return FatalSignal(signal.SIGILL, 1, self.uc.reg_read(self.spec.pc))

    def die(self, sig: FatalSignal) -> None:
        self.exit.signal = sig.signo
        self.exit.core = sig.signo in CORE_SIGNALS

    def _on_interrupt(self, uc: Uc, intno: int, _data: object) -> None:
        if intno == self._sys.trap_intno:
            self._syscall()
            if self.exit.status is not None or self.exit.signal is not None:
                uc.emu_stop()
            return
        self.pending_fatal = self._trap_signal(intno)
        uc.emu_stop()

    def _trap_signal(self, intno: int) -> FatalSignal:
        pc = self.uc.reg_read(self.spec.pc)
        if self.spec.name == "aarch64":
            if intno == 7:  # BRK
                return FatalSignal(signal.SIGTRAP, 1, pc)
            return FatalSignal(signal.SIGILL, 1, pc)  # ILL_ILLOPC
        if intno == 3:  # ebreak
            return FatalSignal(signal.SIGTRAP, 1, pc - 4)
        if intno in (0, 1):  # instruction misaligned / access fault
            return FatalSignal(signal.SIGSEGV, 1, pc - 4)
        return FatalSignal(signal.SIGILL, 1, pc - 4)

    # ---- system calls ----------------------------------------------------------------------

    def _syscall(self) -> None:
        uc = self.uc
        nr = uc.reg_read(self._sys.number)
        raw = tuple(uc.reg_read(r) for r in self._arg_regs)
        result = self.dispatch(nr, raw)
        if self.exit.status is None and self.exit.signal is None:
            uc.reg_write(self._sys.ret, result & MASK64)

    def dispatch(self, nr: int, raw: tuple[int, ...]) -> int:
        sysdef = self.table.get(nr)
        if sysdef is None:
            self._report_unknown(nr, raw)
            return -errno.ENOSYS
        strace = self.config.strace
        if strace and sysdef.ret == "none":
            self.log_line(format_call(self, sysdef, raw, None))
        try:
            args = [kind.decode(self, value) for kind, value in zip(sysdef.args, raw)]
            result = sysdef.handler(self, *args)
        except OSError as exc:
            result = -(exc.errno or errno.EIO)
        except GuestFault:
            result = -errno.EFAULT
        except (GuestExit, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a bug of ours: say so in one line, fail the call
            self.log_line(f"qemuser: internal error in {sysdef.name}: {exc!r}")
            if os.environ.get("QEMUSER_DEBUG"):
                raise
            result = -errno.ENOSYS
        if strace and sysdef.ret != "none":
            self.log_line(format_call(self, sysdef, raw, result))
        return result

    def _report_unknown(self, nr: int, raw: tuple[int, ...]) -> None:
        show = self.config.strace or "unimp" in self.config.log_items
        if show and nr not in self.reported_unknown:
            self.reported_unknown.add(nr)
            name = self.names_by_number.get(nr, "unknown")
            self.log_line(f"qemuser: unsupported syscall {nr} ({name})")
        if self.config.strace:
            args = ",".join(f"{v:#x}" for v in raw)
            self.log_line(f"{self.pid} syscall_{nr}({args}) = -1 errno=38 (ENOSYS)")

    def log_line(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    def request_exit(self, status: int) -> None:
        self.exit.status = status & 0xFF
        self.uc.emu_stop()
