"""The machine assembler and run loop: RAM and MMIO from a `Board`, a device tree written from
the same device list, images loaded as QEMU's virt boards load them, then the vCPUs run in
slices, their exceptions and interrupts handled by the board's platform (system/arch/).

Nothing here names an architecture: what differs is a `CorePlatform` (arch/common.py).
"""

from __future__ import annotations

import copy
import gzip
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from elftools.elf.elffile import ELFFile
from unicorn import UC_HOOK_INTR, Uc, UcError

from qemuser.cpu.exit_checks import ExitChecks
from qemuser.system.arch.common import (
    IDLE_MAX_NS,
    NEVER,
    SLICE,
    Boot,
    InterruptController,
    Vcpu,
    top_of_ram_dtb,
)
from qemuser.system.arch.regfile import RegisterFile
from qemuser.system.boards import Board
from qemuser.system.console import ConsoleInput
from qemuser.system.devices.base import Access, Device, Store
from qemuser.system.devices.char.rx import SerialPort
from qemuser.system.devices.firmware.fw_cfg import FW_CFG_NB_CPUS, FW_CFG_RAM_SIZE, FwCfg
from qemuser.system.devices.flash.cfi import CfiFlash, FlashImageError
from qemuser.system.devices.rtc.goldfish import GoldfishRtc
from qemuser.system.devices.rtc.pl031 import Pl031
from qemuser.system.drive import BlockBackend
from qemuser.system.dtb import DtbError, parse_dtb
from qemuser.system.errors import MachineError
from qemuser.system.fdt import Node, u64_cells
from qemuser.system.iothread import IoEvents
from qemuser.system.smp import Coherence, SharedMemory, Topology, run_smp
from qemuser.system.virtio.transport import DmaError

MiB = 1 << 20


class Debugger(Protocol):
    """What the run loops call between slices: the GDB stub (system/gdbstub.py)."""

    def before_slice(self, machine: Machine, count: int) -> int: ...
    def after_slice(self, machine: Machine) -> None: ...


# Legacy U-Boot image header (U-Boot's include/image.h, struct legacy_img_hdr): big-endian
# magic, header CRC32, time, data size, load address, entry point, data CRC32, os, arch, type,
# compression, 32-byte name.
UIMAGE_MAGIC = b"\x27\x05\x19\x56"
UIMAGE_HEADER = struct.Struct(">IIIIIIIBBBB32s")
UIMAGE_TYPE_KERNEL = 2  # IH_TYPE_KERNEL
UIMAGE_COMP_NONE, UIMAGE_COMP_GZIP = 0, 1  # IH_COMP_NONE, IH_COMP_GZIP


@dataclass
class MachineConfig:
    board: Board
    ram_size: int
    cpu_model: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    dtb: str | None = None
    bios: str | None = None  # None: the board's default; "none": no firmware
    no_reboot: bool = False
    # pflash banks given as images (-drive if=pflash, -machine pflash0=/pflash1=): bank 0 holds
    # the firmware (loaded like -bios), bank 1 backs the board's CFI flash device.
    pflash: dict[int, BlockBackend] = field(default_factory=dict)
    rtc_offset: int = 0  # -rtc base=: guest wall clock minus host wall clock, in seconds
    smp: Topology = field(default_factory=Topology)  # -smp (system/smp.py)


@dataclass
class Loaded:
    entry: int
    end: int  # first guest address after the image


@dataclass
class Machine:
    config: MachineConfig
    console: BinaryIO
    exit_status: int | None = None
    devices: list[Device] = field(default_factory=list)
    cpus: list[Vcpu] = field(default_factory=list)

    def __post_init__(self) -> None:
        board = self.config.board
        self.platform = board.platform
        # Callbacks from host threads (network backends), run between slices.
        self.io = IoEvents()
        try:
            model = board.cpu.model(self.config.cpu_model)
        except KeyError:
            raise MachineError(f"unable to find CPU model '{self.config.cpu_model}'") from None
        try:
            board.check_layout(self.config.ram_size)
        except ValueError as exc:
            raise MachineError(f"machine layout: {exc}") from None
        self.uc: Uc = board.cpu.new_engine(model)
        # -smp: an engine per vCPU, RAM shared by all of them; `uc` is the running one's
        # (system/smp.py).
        self.engines = [self.uc] + [
            board.cpu.new_engine(model) for _ in range(self.config.smp.cpus - 1)
        ]
        self.current_cpu = 0
        self.coherence = Coherence(self.engines)
        self.shared = SharedMemory()
        try:
            if len(self.engines) > 1:
                self.shared.map(self.engines, board.ram_base, self.config.ram_size)
            else:
                self.uc.mem_map(board.ram_base, self.config.ram_size)
        except UcError as exc:
            raise MachineError(
                f"cannot set up guest memory of {self.config.ram_size} bytes: {exc}"
            ) from None
        # Each machine gets its own device state: the board's tuple is a shared declaration.
        # One deepcopy keeps the board's roles (intc, console, ...) the same objects as in the
        # device list.
        devices, intc, console, timer, firmware = copy.deepcopy(
            (board.devices, board.intc, board.console, board.timer, board.firmware)
        )
        self.devices = list(devices)
        self.intc: InterruptController = intc  # type: ignore[assignment]
        self._irq_base = self.intc.first_board_irq
        # The board's serial port: where the console's input goes (feed_input).
        self.console_device: SerialPort | None = console  # type: ignore[assignment]
        self.timer: Device | None = timer
        self.firmware: Device | None = firmware
        for device in self.devices:
            device.attach(self)
            if device.size:
                self._map_device(device)
        try:
            for index in range(len(self.engines)):
                vcpu = self.platform.create_vcpu(self, index, lambda: board.cpu.new_engine(model))
                vcpu.reset()
                self.cpus.append(vcpu)
        except ValueError as exc:
            raise MachineError(f"machine '{board.name}': {exc}") from None
        for engine, vcpu in zip(self.engines, self.cpus):
            # Each engine's exceptions are its own vCPU's.
            def on_intr(_uc: Uc, intno: int, _user: object, vcpu: Vcpu = vcpu) -> None:
                vcpu.on_exception(intno)

            engine.hook_add(UC_HOOK_INTR, on_intr)
        self.console_input: ConsoleInput | None = None
        self._console_out = bytearray()
        self.fault_message = ""  # set by fault(): the run ends with it as the error
        for device in self.devices:
            if isinstance(device, Pl031 | GoldfishRtc):
                device.load_offset = self.config.rtc_offset
        # Called between slices (monitors: pause, reset, quit) and on the guest's own power-off
        # or reset (QMP's SHUTDOWN event): set by a session (system/session.py).
        self.checkpoint: Callable[[Machine], None] | None = None
        self.on_guest_stop: Callable[[str], bool] | None = None
        # The GDB stub (-s/-gdb, system/gdbstub.py): called before and after each slice.
        self.debugger: Debugger | None = None
        self._boot_memory_mapped = False

    # --- DeviceHost -------------------------------------------------------------------------
    def post_io(self, callback: Callable[[], None]) -> None:
        """From a host thread: run `callback` on the machine's thread between slices."""
        self.io.post(callback)

    def console_write(self, data: bytes) -> None:
        # Buffered: a UART sends a byte per MMIO write, a flush each would be a syscall each.
        # The run loop flushes after every slice and before idling.
        self._console_out += data

    def _flush_console(self) -> None:
        if self._console_out:
            self.console.write(self._console_out)
            self.console.flush()
            self._console_out.clear()

    def power_off(self, status: int) -> None:
        if self.exit_status is None and self.on_guest_stop is not None:
            if self.on_guest_stop("guest-shutdown"):
                self.uc.emu_stop()  # -no-shutdown: the session holds the machine stopped
                return
        self.stop(status)

    def stop(self, status: int) -> None:
        """End the run with `status` (from any thread: the engine stops at its next check)."""
        self.exit_status = status
        self.uc.emu_stop()

    def reset(self) -> None:
        # A guest reboot ends the run (as with QEMU's -no-reboot); a monitor's system_reset
        # rebuilds the machine instead (system/session.py).
        if self.exit_status is None and self.on_guest_stop is not None:
            if self.on_guest_stop("guest-reset"):
                self.uc.emu_stop()
                return
        self.stop(0)

    def set_irq(self, line: int, level: bool) -> None:
        self.intc.set_line(self._irq_base + line, level)

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def dma_read(self, guest_addr: int, size: int) -> bytes:
        """Bus-master read of guest RAM (virtio rings and buffers)."""
        try:
            return bytes(self.uc.mem_read(guest_addr, size))
        except UcError:
            raise DmaError(f"no guest RAM at 0x{guest_addr:x} (+0x{size:x})") from None

    def dma_write(self, guest_addr: int, data: bytes) -> None:
        try:
            self.uc.mem_write(guest_addr, data)
        except UcError:
            raise DmaError(f"no guest RAM at 0x{guest_addr:x} (+0x{len(data):x})") from None

    # --- assembly ---------------------------------------------------------------------------
    def _map_device(self, device: Device) -> None:
        def read(uc: Uc, offset: int, size: int, access: Access) -> int:
            return access(offset, size)

        def write(uc: Uc, offset: int, size: int, value: int, store: Store) -> None:
            store(offset, size, value)

        for base, size, access, store in device.windows():
            pages = -(-size // 0x1000) * 0x1000  # unicorn maps whole pages
            for engine in self.engines:
                engine.mmio_map(base, pages, read, access, write, store)

    def build_fdt(self, initrd: tuple[int, int] | None) -> bytes:
        board = self.config.board
        root = Node("", {"#address-cells": 2, "#size-cells": 2})
        root.set("compatible", list(board.compatible))
        root.set("model", board.model or board.description)
        chosen = root.child("chosen", bootargs=self.config.append)
        if initrd:
            chosen.set("linux,initrd-start", u64_cells(initrd[0]))
            chosen.set("linux,initrd-end", u64_cells(initrd[1]))
        root.child(
            f"memory@{board.ram_base:x}",
            device_type="memory",
            reg=u64_cells(board.ram_base) + u64_cells(self.config.ram_size),
        )
        ctx = self.platform.fdt_context()
        bus = self.platform.fdt_platform(root, ctx, len(self.cpus), self.config.smp)
        ctx.root = root
        stdout = ""
        for device in self.devices:
            first = len(bus.children)
            device.fdt(bus, ctx)
            if device is self.console_device and len(bus.children) > first:
                stdout = bus.children[first].name
        if stdout:
            chosen.set("stdout-path", ("/" if bus is root else f"/{bus.name}/") + stdout)
        return root.to_dtb()

    # --- loading ----------------------------------------------------------------------------
    def _read(self, path: str, what: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise MachineError(f"could not load {what} '{path}': {exc.strerror}") from None

    def _write(self, addr: int, data: bytes, what: str) -> None:
        try:
            self.uc.mem_write(addr, data)
        except UcError:
            raise MachineError(
                f"{what} does not fit in memory at 0x{addr:x} (size 0x{len(data):x})"
            ) from None

    def load_image(self, path: str, what: str, raw_addr: int) -> Loaded:
        """Load an ELF at its physical addresses, or a raw image (gzip allowed) at `raw_addr`."""
        data = self._read(path, what)
        if data[:4] == b"\x7fELF":
            import io

            elf = ELFFile(io.BytesIO(data))
            if elf.header["e_machine"] != _ELF_MACHINES[self.config.board.cpu.elf_machine]:
                # QEMU refuses an ELF of another machine (and exits 1 without a word).
                raise MachineError(
                    f"could not load {what} '{path}': ELF for {elf.header['e_machine']}, "
                    f"not {_ELF_MACHINES[self.config.board.cpu.elf_machine]}"
                )
            end = 0
            for seg in elf.iter_segments():
                if seg["p_type"] != "PT_LOAD" or not seg["p_memsz"]:
                    continue
                body = seg.data() + bytes(seg["p_memsz"] - seg["p_filesz"])
                self._write(seg["p_paddr"], body, what)
                end = max(end, seg["p_paddr"] + seg["p_memsz"])
            return Loaded(entry=elf.header["e_entry"], end=end)
        if data[:4] == UIMAGE_MAGIC:
            return self._load_uimage(data, path, what)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        image = self.platform.kernel_image(data, self.config.board.ram_base)
        if image is not None:
            addr, end = image
            self._write(addr, data, what)
            return Loaded(entry=addr, end=end)
        self._write(raw_addr, data, what)
        return Loaded(entry=raw_addr, end=raw_addr + len(data))

    def _load_uimage(self, data: bytes, path: str, what: str) -> Loaded:
        """A legacy U-Boot image (mkimage -T kernel): the payload goes to the header's load
        address and runs from its entry point, as QEMU's -kernel does with one."""
        if len(data) < UIMAGE_HEADER.size:
            raise MachineError(f"{what} '{path}' is a truncated U-Boot image")
        fields = UIMAGE_HEADER.unpack_from(data)
        _magic, header_crc, _time, size, load, entry, data_crc, _os, arch, kind, comp, _name = (
            fields
        )
        unchecked = UIMAGE_HEADER.pack(*fields[:1], 0, *fields[2:])
        payload = data[UIMAGE_HEADER.size : UIMAGE_HEADER.size + size]
        if zlib.crc32(unchecked) != header_crc or len(payload) != size:
            raise MachineError(f"{what} '{path}' is a truncated or corrupt U-Boot image")
        if zlib.crc32(payload) != data_crc:
            raise MachineError(f"{what} '{path}': U-Boot image data checksum mismatch")
        if arch != self.platform.uimage_arch:
            raise MachineError(f"{what} '{path}' is a U-Boot image for another architecture")
        if kind != UIMAGE_TYPE_KERNEL:
            raise MachineError(f"{what} '{path}' is a U-Boot image of type {kind}, not a kernel")
        if comp == UIMAGE_COMP_GZIP:
            payload = gzip.decompress(payload)
        elif comp != UIMAGE_COMP_NONE:
            raise MachineError(f"{what} '{path}': U-Boot image compression {comp} is unsupported")
        self._write(load, payload, what)
        return Loaded(entry=entry, end=load + len(payload))

    def flash_device(self) -> CfiFlash | None:
        return next((d for d in self.devices if isinstance(d, CfiFlash)), None)

    def boot(self) -> None:
        """Load firmware, kernel, initrd and DTB and set the boot registers."""
        dtb, dtb_addr, boot = self.prepare_boot()
        self._write(dtb_addr, dtb, "dtb")
        self.config.board.platform.start(self.cpus[0], self, boot)

    def prepare_boot(self) -> tuple[bytes, int, Boot]:
        """Load the images into guest memory; the DTB, where it goes, and the boot registers."""
        cfg, board, platform = self.config, self.config.board, self.platform
        ram_end = board.ram_base + cfg.ram_size
        bios = None if cfg.bios in (None, "none", "default") else cfg.bios
        flash0 = cfg.pflash.get(0)
        # No -bios (or -bios default): the platform's own firmware, if it has one (riscv's
        # built-in SBI, see arch/riscv64.py for why).
        builtin = platform.builtin_firmware and cfg.bios in (None, "default") and flash0 is None
        if builtin and cfg.kernel is None:
            raise MachineError("no kernel given for the default firmware (use -kernel)")
        if not self._boot_memory_mapped:
            platform.map_boot_memory(self)
            self._boot_memory_mapped = True
        if bios is None and flash0 is None and cfg.kernel is None:
            raise MachineError("no kernel or firmware given (use -kernel or -bios)")
        flash = self.flash_device()
        if 1 in cfg.pflash:
            if flash is None:
                raise MachineError(f"machine '{board.name}' has no second flash bank")
            try:
                flash.load_backend(cfg.pflash[1])
            except FlashImageError as exc:
                raise MachineError(f"{exc}") from None
        entry = None
        firmware = bool(bios) or flash0 is not None
        if flash0 is not None:
            entry = self._load_flash0(flash0)
        elif bios:
            fw_addr = platform.firmware_address(board.ram_base)
            entry = self.load_image(bios, "firmware", fw_addr).entry
        kernel_end = board.ram_base
        kernel_entry = 0
        if cfg.kernel:
            raw_addr = platform.kernel_address(board.ram_base, firmware or builtin)
            loaded = self.load_image(cfg.kernel, "kernel", raw_addr)
            kernel_entry, kernel_end = loaded.entry, loaded.end
            entry = entry if entry is not None else kernel_entry
        assert entry is not None
        initrd = None
        if cfg.initrd:
            data = self._read(cfg.initrd, "initrd")
            start = max(_align(kernel_end, 2 * MiB), board.ram_base + cfg.ram_size // 2)
            if start + len(data) > ram_end - 2 * MiB:
                start = _align(kernel_end, 2 * MiB)
            self._write(start, data, "initrd")
            initrd = (start, start + len(data))
        self._fill_fw_cfg(firmware)
        dtb = self.user_dtb(initrd) if cfg.dtb else self.build_fdt(initrd)
        # The DTB goes at the top of RAM, 2 MiB aligned, as QEMU's riscv virt does; firmware
        # run from flash (aarch64's U-Boot) expects it at the start of RAM instead.
        if platform.dtb_in_ram_start_with_bios and firmware:
            dtb_addr = board.ram_base
        else:
            dtb_addr = top_of_ram_dtb(ram_end, len(dtb))
        boot = Boot(entry, kernel_entry, dtb_addr, bios=firmware, builtin_firmware=builtin)
        return dtb, dtb_addr, boot

    def _fill_fw_cfg(self, firmware: bool) -> None:
        """What QEMU's virt puts in fw_cfg; with firmware, -kernel/-initrd/-append too (EDK2
        boots a kernel only from there)."""
        fw_cfg = next((d for d in self.devices if isinstance(d, FwCfg)), None)
        if fw_cfg is None:
            return
        cfg = self.config
        fw_cfg.add(FW_CFG_NB_CPUS, struct.pack("<H", len(self.cpus)))
        fw_cfg.add(FW_CFG_RAM_SIZE, struct.pack("<Q", cfg.ram_size))
        if firmware and cfg.kernel:
            initrd = self._read(cfg.initrd, "initrd") if cfg.initrd else None
            fw_cfg.set_boot(self._read(cfg.kernel, "kernel"), initrd, cfg.append)

    def _load_flash0(self, backend: BlockBackend) -> int:
        """pflash0 from an image: its contents where -bios would go (plain memory, see
        devices/flash/cfi.py); it runs from its first byte."""
        addr = self.platform.firmware_address(self.config.board.ram_base)
        flash = self.flash_device()
        if flash is not None and backend.size != flash.size:
            raise MachineError(
                f"device requires {flash.size} bytes, block backend provides {backend.size} bytes"
            )
        self._write(addr, backend.read(0, backend.size), "firmware")
        return addr

    def user_dtb(self, initrd: tuple[int, int] | None) -> bytes:
        """A -dtb file with /chosen filled as QEMU fills it: bootargs from -append, the
        initrd's bounds; the rest of the tree is the user's."""
        assert self.config.dtb is not None
        data = self._read(self.config.dtb, "dtb")
        try:
            root = parse_dtb(data)
        except DtbError as exc:
            raise MachineError(f"Couldn't open dtb file {self.config.dtb}: {exc}") from None
        chosen = root.find("chosen") or root.child("chosen")
        if self.config.append:
            chosen.set("bootargs", self.config.append)
        if initrd:
            chosen.set("linux,initrd-start", u64_cells(initrd[0]))
            chosen.set("linux,initrd-end", u64_cells(initrd[1]))
        return root.to_dtb()

    # --- running ----------------------------------------------------------------------------
    def _idle(self, vcpu: Vcpu) -> None:
        """The guest waits for an interrupt: sleep until the next timer event or console input."""
        wait_ns = vcpu.ns_until_event(IDLE_MAX_NS)
        if wait_ns <= 0:
            return
        self._flush_console()
        fds = self.console_input.wait_fds() if self.console_input is not None else []
        self.io.wait(wait_ns / 1e9, fds)

    def poll_console_input(self) -> None:
        """Typed bytes to the board's serial port (which raises its own RX interrupt)."""
        if self.console_input is None:
            return
        data = self.console_input.read()
        if self.console_input.quit:
            self.stop(0)  # C-a x: the emulator ends, as QEMU's (no guest shutdown)
        elif data and self.console_device is not None:
            self.console_device.feed_input(data)

    def fault(self, what: str) -> None:
        """A guest problem the platform cannot hand to the guest: stop, report it as one line."""
        pc = self.uc.reg_read(self.config.board.cpu.pc)
        self.fault_message = f"guest {what} at pc 0x{pc:x}"
        self.exit_status = 1
        self.uc.emu_stop()

    def run(self) -> int:
        """Run until the guest powers off; returns the exit status."""
        if len(self.cpus) > 1:
            return run_smp(self)
        # unicorn's exit check after every guest memory access (exit_checks.py) is ~a quarter of
        # a Linux boot's host time; nothing here needs a stop right at an access: the count and
        # the hooks that stop the engine (MSR DAIF, power off, faults) may end the block first.
        if self.platform.skip_exit_checks:
            ExitChecks(self.uc).skip()
        pc_reg = self.config.board.cpu.pc
        regs = RegisterFile(self.uc)  # the binding's reg_read is ~5 µs of every slice
        vcpu = self.cpus[0]  # one engine runs the boot vCPU (no SMP yet)
        self.fault_message = ""
        slice_count = SLICE
        while self.exit_status is None:
            if self.checkpoint is not None:
                self.checkpoint(self)  # may block while a monitor holds the machine stopped
                if self.exit_status is not None:
                    break
            if self.debugger is not None:  # may stop the machine for GDB; 1 when it steps
                slice_count = self.debugger.before_slice(self, slice_count)
                if self.exit_status is not None:
                    break
            pc = regs.read(pc_reg)
            try:
                self.uc.emu_start(pc, NEVER, count=slice_count)
            except UcError as exc:
                if self.exit_status is None and not vcpu.recover(exc):
                    self._flush_console()
                    raise MachineError(f"guest stopped: {exc} at pc 0x{pc:x}") from None
            if self.debugger is not None and self.exit_status is None:
                self.debugger.after_slice(self)  # a breakpoint, a finished step, Ctrl-C
            self._flush_console()
            if self.exit_status is not None:
                break
            in_wfi = vcpu.in_wfi()
            if in_wfi:
                self._idle(vcpu)
            self.poll_console_input()
            self.io.run_pending()
            if self.exit_status is not None:
                break
            vcpu.poll(in_wfi)
            slice_count = vcpu.slice_length()
        self._flush_console()
        if self.fault_message:
            raise MachineError(self.fault_message)
        return self.exit_status


# pyelftools' names of the e_machine values our boards run.
_ELF_MACHINES = {183: "EM_AARCH64", 243: "EM_RISCV"}


def _align(value: int, to: int) -> int:
    return -(-value // to) * to
