"""The machine assembler and run loop: RAM, flash and MMIO from a `Board`, a device tree written
from the same device list, images loaded as QEMU's virt boards load them, then the CPU runs in
slices with firmware calls (PSCI) and guest exceptions handled between instructions.
"""

from __future__ import annotations

import copy
import gzip
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from elftools.elf.elffile import ELFFile
from unicorn import UC_HOOK_INTR, Uc, UcError
from unicorn import arm64_const as a64

from qemuser.cpu.exit_checks import ExitChecks
from qemuser.system.arm import ArmCore
from qemuser.system.boards import Board
from qemuser.system.console import ConsoleInput
from qemuser.system.devices import (
    Access,
    Clint,
    Device,
    FdtContext,
    GicV2,
    Ns16550,
    Pl011,
    Plic,
    Psci,
    Store,
)
from qemuser.system.fdt import Node, u64_cells
from qemuser.system.riscv import RiscvHart
from qemuser.system.virtio import DmaError

MiB = 1 << 20
SLICE = 200_000  # instructions per emu_start: bounds how late a pending event is noticed
SHORT_SLICE = 1_000  # while an interrupt waits for the guest to unmask it
# aarch64 sizes slices by the next timer deadline, between these bounds.
SLICE_MIN, MAX_SLICE, NS_PER_INSN = 20_000, 2_000_000, 10
IDLE_MAX_NS = 10_000_000  # longest single sleep in WFI (input and timers wake it earlier)
# emu_start(until=0) would stop a guest that runs at address 0 (flash): give one never reached.
_NEVER = 0xFFFF_FFFF_FFFF_FFF0
FLASH_SIZE = 64 * MiB  # aarch64 virt: pflash bank 0 at address 0


# Legacy U-Boot image header (U-Boot's include/image.h, struct legacy_img_hdr): big-endian
# magic, header CRC32, time, data size, load address, entry point, data CRC32, os, arch, type,
# compression, 32-byte name.
UIMAGE_MAGIC = b"\x27\x05\x19\x56"
UIMAGE_HEADER = struct.Struct(">IIIIIIIBBBB32s")
UIMAGE_ARCH = {"aarch64": 22, "riscv64": 26}  # IH_ARCH_ARM64, IH_ARCH_RISCV
UIMAGE_TYPE_KERNEL = 2  # IH_TYPE_KERNEL
UIMAGE_COMP_NONE, UIMAGE_COMP_GZIP = 0, 1  # IH_COMP_NONE, IH_COMP_GZIP


class MachineError(Exception):
    """A configuration or boot problem to report as one line (bad image, overlap, ...)."""


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
    irq_levels: dict[int, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        board = self.config.board
        self.arch = board.cpu.name
        try:
            model = board.cpu.model(self.config.cpu_model)
        except KeyError:
            raise MachineError(f"unable to find CPU model '{self.config.cpu_model}'") from None
        try:
            board.check_layout(self.config.ram_size)
        except ValueError as exc:
            raise MachineError(f"machine layout: {exc}") from None
        self.uc: Uc = board.cpu.new_engine(model)
        try:
            self.uc.mem_map(board.ram_base, self.config.ram_size)
        except UcError as exc:
            raise MachineError(
                f"cannot set up guest memory of {self.config.ram_size} bytes: {exc}"
            ) from None
        # Each machine gets its own device state: the board's tuple is a shared declaration.
        self.devices = [copy.deepcopy(d) for d in board.devices]
        for device in self.devices:
            device.attach(self)
            if device.size:
                self._map_device(device)
        self.psci = next((d for d in self.devices if isinstance(d, Psci)), None)
        self.clint = next((d for d in self.devices if isinstance(d, Clint)), None)
        self.gic = next((d for d in self.devices if isinstance(d, GicV2)), None)
        self.plic = next((d for d in self.devices if isinstance(d, Plic)), None)
        self.uc.hook_add(UC_HOOK_INTR, self._on_intr)
        if self.arch == "riscv64":
            self.riscv = RiscvHart(self, self.clint, self.plic)
            self.riscv.console = next((d for d in self.devices if isinstance(d, Ns16550)), None)
        if self.arch == "aarch64":
            self.arm = ArmCore(
                self.uc, lambda: board.cpu.new_engine(model), self.gic, self.psci, self._fault
            )
            self.arm.reset()
        # The board's serial port: where the console's input goes (feed_input).
        self.console_device = next(
            (d for d in self.devices if isinstance(d, (Pl011, Ns16550))), None
        )
        self.console_input: ConsoleInput | None = None
        self._console_out = bytearray()

    # --- DeviceHost -------------------------------------------------------------------------
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
        self.exit_status = status
        self.uc.emu_stop()

    def reset(self) -> None:
        # A reboot ends the run (as with QEMU's -no-reboot): there is no state worth rebuilding.
        self.power_off(0)

    def set_irq(self, line: int, level: bool) -> None:
        self.irq_levels[line] = level
        if self.gic is not None:
            self.gic.set_line(32 + line, level)  # board lines are GIC shared interrupts
        if self.plic is not None:
            self.plic.set_line(line, level)  # riscv: board lines are PLIC sources

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
            self.uc.mmio_map(base, pages, read, access, write, store)

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
        if self.arch == "aarch64":
            ctx = FdtContext(interrupt_parent=1, clock=2, gic=True)
        else:  # phandles as QEMU numbers them: cpu@0, its interrupt controller, the PLIC
            ctx = FdtContext(interrupt_parent=3, clock=0, gic=False, cpu_intc=2)
        if self.arch == "aarch64":
            root.set("interrupt-parent", ctx.interrupt_parent)  # the GIC, for every node
        if self.arch == "aarch64":
            cpus = root.child("cpus", **{"#address-cells": 1, "#size-cells": 0})
            cpus.child(
                "cpu@0", device_type="cpu", compatible="arm,cortex-a57", reg=0, enable_method="psci"
            )
            root.child(
                "apb-pclk",
                compatible="fixed-clock",
                **{"#clock-cells": 0},
                clock_frequency=24_000_000,
                clock_output_names="clk24mhz",
                phandle=2,
            )
            root.child(
                "timer",
                compatible=["arm,armv8-timer", "arm,armv7-timer"],
                interrupts=[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4],
                always_on=None,
            )
        else:
            cpus = root.child("cpus")
            cpus.props = {"#address-cells": 1, "#size-cells": 0, "timebase-frequency": 10_000_000}
            cpu = cpus.child(
                "cpu@0",
                phandle=1,
                device_type="cpu",
                reg=0,
                status="okay",
                compatible="riscv",
                riscv__isa="rv64imafdc",
                mmu_type="riscv,sv39",
            )
            cpu.child(
                "interrupt-controller",
                compatible="riscv,cpu-intc",
                interrupt_controller=None,
                phandle=ctx.cpu_intc,
                **{"#interrupt-cells": 1},
            )
        soc = (
            root
            if self.arch == "aarch64"
            else root.child("soc", compatible="simple-bus", ranges=None)
        )
        if soc is not root:
            soc.props.update({"#address-cells": 2, "#size-cells": 2})
        ctx.root = root
        for device in self.devices:
            device.fdt(soc, ctx)
        stdout = next((c.name for c in soc.children if c.name.startswith(("pl011", "serial"))), "")
        if stdout:
            chosen.set("stdout-path", ("/soc/" if soc is not root else "/") + stdout)
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
        if self.arch == "aarch64" and data[0x38:0x3C] == b"ARM\x64":
            # arm64 Image header: text_offset at 8; image_size at 16 includes the BSS.
            text_offset, image_size = struct.unpack_from("<QQ", data, 8)
            raw_addr = self.config.board.ram_base + (text_offset or 0)
            self._write(raw_addr, data, what)
            return Loaded(entry=raw_addr, end=raw_addr + max(image_size, len(data)))
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
        if arch != UIMAGE_ARCH[self.arch]:
            raise MachineError(f"{what} '{path}' is a U-Boot image for another architecture")
        if kind != UIMAGE_TYPE_KERNEL:
            raise MachineError(f"{what} '{path}' is a U-Boot image of type {kind}, not a kernel")
        if comp == UIMAGE_COMP_GZIP:
            payload = gzip.decompress(payload)
        elif comp != UIMAGE_COMP_NONE:
            raise MachineError(f"{what} '{path}': U-Boot image compression {comp} is unsupported")
        self._write(load, payload, what)
        return Loaded(entry=entry, end=load + len(payload))

    def boot(self) -> None:
        """Load firmware, kernel, initrd and DTB and set the boot registers."""
        cfg, board = self.config, self.config.board
        ram_end = board.ram_base + cfg.ram_size
        bios = None if cfg.bios in (None, "none", "default") else cfg.bios
        # riscv64 with no -bios (or -bios default): the built-in SBI (see riscv.py for why).
        builtin_sbi = self.arch == "riscv64" and cfg.bios in (None, "default")
        if builtin_sbi and cfg.kernel is None:
            raise MachineError("no kernel given for the default firmware (use -kernel)")
        if self.arch == "aarch64":
            self.uc.mem_map(0, FLASH_SIZE)
        if bios is None and cfg.kernel is None:
            raise MachineError("no kernel or firmware given (use -kernel or -bios)")
        entry = None
        if bios:
            fw_addr = 0 if self.arch == "aarch64" else board.ram_base
            entry = self.load_image(bios, "firmware", fw_addr).entry
        kernel_end = board.ram_base
        kernel_entry = 0
        if cfg.kernel:
            # riscv: with firmware in front, the S-mode payload goes 2 MiB in (fw_jump's choice).
            offset = 0x20_0000 if (self.arch == "riscv64" and (bios or builtin_sbi)) else 0
            loaded = self.load_image(cfg.kernel, "kernel", board.ram_base + offset)
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
        dtb = self._read(cfg.dtb, "dtb") if cfg.dtb else self.build_fdt(initrd)
        # The DTB goes at the top of RAM, 2 MiB aligned, as QEMU's riscv virt does; aarch64
        # firmware (U-Boot from flash) expects it at the start of RAM instead.
        if self.arch == "aarch64" and bios:
            dtb_addr = board.ram_base
        else:
            dtb_addr = (ram_end - len(dtb) - MiB) & ~(2 * MiB - 1)
        self._write(dtb_addr, dtb, "dtb")
        if self.arch == "aarch64":
            self.uc.reg_write(a64.UC_ARM64_REG_X0, dtb_addr)
            self.uc.reg_write(board.cpu.pc, entry)
        else:
            self.uc.mem_map(self._RISCV_MROM, self._RISCV_MROM_SIZE)
            info = self._riscv_fw_dynamic_info(kernel_entry) if bios else 0
            self.riscv.reset(entry, dtb_addr, builtin_sbi, info, stub_addr=self._RISCV_MROM)

    # QEMU's riscv boot ROM (hw/riscv/boot.c) sits at 0x1000 and passes OpenSBI's fw_dynamic
    # the next stage in a2 (include/sbi/fw_dynamic.h, struct fw_dynamic_info, version 2).
    _RISCV_MROM, _RISCV_MROM_SIZE = 0x1000, 0xF000
    _FW_DYNAMIC_MAGIC, _FW_DYNAMIC_VERSION, _FW_DYNAMIC_NEXT_S = 0x4942534F, 2, 1

    def _riscv_fw_dynamic_info(self, next_addr: int) -> int:
        """Write fw_dynamic_info (magic, version, next_addr, next_mode, options, boot_hart)."""
        addr = self._RISCV_MROM + 0x40
        info = struct.pack(
            "<6Q",
            self._FW_DYNAMIC_MAGIC,
            self._FW_DYNAMIC_VERSION,
            next_addr,
            self._FW_DYNAMIC_NEXT_S,
            0,
            0,
        )
        self.uc.mem_write(addr, info)
        return addr

    # --- running ----------------------------------------------------------------------------
    def _on_intr(self, uc: Uc, intno: int, _user: object) -> None:
        if self.arch == "aarch64":
            self.arm.on_exception(intno)
        else:
            self.riscv.on_exception(intno)

    def _stopped_in_wfi(self) -> bool:
        if self.arch == "aarch64":
            return self.arm.in_wfi()  # pc is virtual once the MMU is on
        return self.riscv.in_wfi()

    def _idle(self) -> None:
        """The guest waits for an interrupt: sleep until the next timer event or console input."""
        if self.arch == "riscv64":
            wait_ns = min(self.riscv.ns_until_event(), IDLE_MAX_NS)
        else:
            wait_ns = self.arm.ns_until_event(IDLE_MAX_NS)
        if wait_ns <= 0:
            return
        self._flush_console()
        if self.console_input is not None:
            self.console_input.wait(wait_ns)
        else:
            time.sleep(wait_ns / 1e9)

    def _poll_console_input(self) -> None:
        """Typed bytes to the board's serial port (which raises its own RX interrupt)."""
        if self.console_input is None:
            return
        data = self.console_input.read()
        if self.console_input.quit:
            self.power_off(0)
        elif data and self.console_device is not None:
            self.console_device.feed_input(data)

    def _fault(self, what: str) -> None:
        pc = self.uc.reg_read(self.config.board.cpu.pc)
        self.fault = f"guest {what} at pc 0x{pc:x}"
        self.exit_status = 1
        self.uc.emu_stop()

    def _step_to_unmask(self, limit: int = 64) -> None:
        """Linux idles with IRQs masked and, once WFI returns, unmasks them a few instructions
        on (msr daifclr) before its idle loop masks them again and waits: even a short slice
        runs through that window. Step one instruction at a time to the unmask and take the
        pending IRQ there (seen: a virtio-blk completion, and `sleep 1`, never delivered)."""
        pc_reg = self.config.board.cpu.pc
        for _ in range(limit):
            try:
                self.uc.emu_start(self.uc.reg_read(pc_reg), _NEVER, count=1)
            except UcError:
                return  # the main loop runs that instruction again and reports the error
            if self.exit_status is not None:
                return
            if not self.arm.irq_masked():
                self.arm.poll()
                return

    def _aarch64_slice(self) -> int:
        """Instructions to run next: up to the next timer deadline (at an assumed ~100 M
        instructions/s), so a timer fires about on time without slicing finely when idle-free.
        An IRQ held off by PSTATE.I: Linux unmasks a few instructions after WFI (msr daifclr,
        which no hook sees), so look again soon."""
        if self.arm.irq_masked():
            return SHORT_SLICE
        wait_ns = self.arm.ns_until_event(MAX_SLICE * NS_PER_INSN)
        return max(SLICE_MIN, wait_ns // NS_PER_INSN)

    def run(self) -> int:
        """Run until the guest powers off; returns the exit status."""
        # unicorn's exit check after every guest memory access (exit_checks.py) is ~a quarter of
        # a Linux boot's host time; nothing here needs a stop right at an access: the count and
        # the hooks that stop the engine (MSR DAIF, power off, faults) may end the block first.
        ExitChecks(self.uc).skip()
        cpu = self.config.board.cpu
        self.fault = ""
        slice_count = SLICE
        while self.exit_status is None:
            pc = self.uc.reg_read(cpu.pc)
            try:
                self.uc.emu_start(pc, _NEVER, count=slice_count)
            except UcError as exc:
                if self.exit_status is None:
                    self._flush_console()
                    raise MachineError(f"guest stopped: {exc} at pc 0x{pc:x}") from None
            self._flush_console()
            if self.exit_status is not None:
                break
            in_wfi = self._stopped_in_wfi()
            if in_wfi:
                self._idle()
            self._poll_console_input()
            if self.exit_status is not None:
                break
            if self.arch == "riscv64":
                self.riscv.poll()
            else:
                self.arm.poll()
                if in_wfi and self.arm.irq_masked():
                    self._step_to_unmask()
                slice_count = self._aarch64_slice()
        self._flush_console()
        if self.fault:
            raise MachineError(self.fault)
        return self.exit_status


def _align(value: int, to: int) -> int:
    return -(-value // to) * to
