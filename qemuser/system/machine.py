"""The machine assembler and run loop: RAM, flash and MMIO from a `Board`, a device tree written
from the same device list, images loaded as QEMU's virt boards load them, then the CPU runs in
slices with firmware calls (PSCI) and guest exceptions handled between instructions.
"""

from __future__ import annotations

import copy
import gzip
import struct
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from elftools.elf.elffile import ELFFile
from unicorn import UC_HOOK_INSN, UC_HOOK_INTR, Uc, UcError
from unicorn import arm64_const as a64
from unicorn import riscv_const as rv

from qemuser.system.boards import Board
from qemuser.system.devices import Access, Clint, Device, FdtContext, GicV2, Psci, Store
from qemuser.system.fdt import Node, u64_cells

MiB = 1 << 20
SLICE = 200_000  # instructions per emu_start: bounds how late a pending event is noticed
# emu_start(until=0) would stop a guest that runs at address 0 (flash): give one never reached.
_NEVER = 0xFFFF_FFFF_FFFF_FFF0
_WFI = {"aarch64": 0xD503207F, "riscv64": 0x10500073}
FLASH_SIZE = 64 * MiB  # aarch64 virt: pflash bank 0 at address 0


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
        self.timers = {27: GenericTimer(), 30: GenericTimer()}  # virtual, physical (PPI ids)
        self.uc.hook_add(UC_HOOK_INTR, self._on_intr)
        if self.arch == "aarch64":
            self._reset_aarch64()
            # unicorn drops writes to the timer's CTL/CVAL (UNICORN-NOTES): keep them ourselves.
            # user_data says the direction: pc is virtual here, so the insn cannot be re-read.
            self.uc.hook_add(UC_HOOK_INSN, self._on_sysreg, True, aux1=a64.UC_ARM64_INS_MRS)
            self.uc.hook_add(UC_HOOK_INSN, self._on_sysreg, False, aux1=a64.UC_ARM64_INS_MSR)

    # --- DeviceHost -------------------------------------------------------------------------
    def console_write(self, data: bytes) -> None:
        self.console.write(data)
        self.console.flush()

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

    def now_ns(self) -> int:
        return time.monotonic_ns()

    # --- assembly ---------------------------------------------------------------------------
    def _map_device(self, device: Device) -> None:
        def read(uc: Uc, offset: int, size: int, access: Access) -> int:
            return access(offset, size)

        def write(uc: Uc, offset: int, size: int, value: int, store: Store) -> None:
            store(offset, size, value)

        for base, size, access, store in device.windows():
            pages = -(-size // 0x1000) * 0x1000  # unicorn maps whole pages
            self.uc.mmio_map(base, pages, read, access, write, store)

    def _reset_aarch64(self) -> None:
        # SCR_EL3 = NS | HCE | RW and HCR_EL2.RW: EL1 is AArch64 (48-bit tables) and HVC is
        # defined, which PSCI over HVC needs (UNICORN-NOTES, system level).
        # SCR_EL3.APK/API and HCR_EL2.APK/API: pointer-authentication keys are not trapped
        # (Debian's kernel programs them when -cpu max offers PAuth).
        self.uc.cpr_write(3, 6, 1, 1, 0, 0x501 | 1 << 16 | 1 << 17)
        self.uc.cpr_write(3, 4, 1, 1, 0, 1 << 31 | 1 << 40 | 1 << 41)
        # CPTR_EL3.EZ: as firmware would, let EL1 reach SVE's ZCR_EL1 (-cpu max has SVE).
        self.uc.cpr_write(3, 6, 1, 1, 2, 1 << 8)

    def build_fdt(self, initrd: tuple[int, int] | None) -> bytes:
        board = self.config.board
        root = Node("", {"#address-cells": 2, "#size-cells": 2})
        root.set("compatible", list(board.compatible))
        root.set("model", board.description)
        chosen = root.child("chosen", bootargs=self.config.append)
        if initrd:
            chosen.set("linux,initrd-start", u64_cells(initrd[0]))
            chosen.set("linux,initrd-end", u64_cells(initrd[1]))
        root.child(
            f"memory@{board.ram_base:x}",
            device_type="memory",
            reg=u64_cells(board.ram_base) + u64_cells(self.config.ram_size),
        )
        ctx = FdtContext(interrupt_parent=1, clock=2, gic=self.arch == "aarch64", cpu_intc=3)
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
                phandle=3,
                **{"#interrupt-cells": 1},
            )
        soc = (
            root
            if self.arch == "aarch64"
            else root.child("soc", compatible="simple-bus", ranges=None)
        )
        if soc is not root:
            soc.props.update({"#address-cells": 2, "#size-cells": 2})
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

    def boot(self) -> None:
        """Load firmware, kernel, initrd and DTB and set the boot registers."""
        cfg, board = self.config, self.config.board
        ram_end = board.ram_base + cfg.ram_size
        bios = None if cfg.bios in (None, "none") else cfg.bios
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
            offset = 0x20_0000 if (self.arch == "riscv64" and bios) else 0
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
        else:
            self.uc.reg_write(rv.UC_RISCV_REG_A0, 0)  # hart id
            self.uc.reg_write(rv.UC_RISCV_REG_A1, dtb_addr)
        self.uc.reg_write(board.cpu.pc, entry)

    # --- running ----------------------------------------------------------------------------
    def _on_intr(self, uc: Uc, intno: int, _user: object) -> None:
        if self.arch == "aarch64":
            if intno in (11, 13) and self.psci is not None:  # HVC, SMC (pc already after)
                x0 = uc.reg_read(a64.UC_ARM64_REG_X0)
                x1 = uc.reg_read(a64.UC_ARM64_REG_X1)
                uc.reg_write(a64.UC_ARM64_REG_X0, self.psci.call(x0, x1))
                return
            self._aarch64_sync(intno)
        else:
            # unicorn has already stepped pc past every exception (UNICORN-NOTES): undo it.
            epc = uc.reg_read(rv.UC_RISCV_REG_PC) - 4
            cause = intno
            if intno == 8:  # ecall: the cause says from which mode (8 U, 9 S, 11 M)
                cause = 8 + uc.reg_read(rv.UC_RISCV_REG_PRIV)
            self._riscv_trap(cause, epc)

    def counter(self) -> int:
        """CNTVCT/CNTPCT: unicorn's counter, which follows the host clock."""
        return self.uc.cpr_read(3, 3, 14, 0, 2)

    def _on_sysreg(self, uc: Uc, reg: int, cp: object, is_read: bool) -> bool:
        """MRS/MSR of CNTV_* / CNTP_* (op0 3, op1 3, CRn 14, CRm 3 or 2): emulated here."""
        if (cp.op0, cp.op1, cp.crn) != (3, 3, 14) or cp.crm not in (2, 3):  # type: ignore[attr-defined]
            return False
        timer = self.timers[27 if cp.crm == 3 else 30]  # type: ignore[attr-defined]
        op2 = cp.op2  # type: ignore[attr-defined]
        now = self.counter()
        if is_read:
            if op2 == 0:
                value = (timer.cval - now) & 0xFFFF_FFFF
            elif op2 == 1:
                value = timer.ctl | (4 if now >= timer.cval else 0)
            else:
                value = timer.cval
            uc.reg_write(reg, value)
        else:
            value = uc.reg_read(reg)
            if op2 == 0:  # TVAL: signed 32-bit offset from now
                timer.cval = (now + ((value & 0xFFFF_FFFF) ^ 0x8000_0000) - 0x8000_0000) & (
                    (1 << 64) - 1
                )
            elif op2 == 1:
                timer.ctl = value & 3
            else:
                timer.cval = value
            self._update_timers()
        return True

    def _update_timers(self) -> None:
        if self.gic is None:
            return
        now = self.counter()
        for ppi, timer in self.timers.items():
            self.gic.set_line(ppi, timer.ctl & 3 == 1 and now >= timer.cval)

    def _aarch64_poll(self) -> None:
        """Raise timer lines and take a pending IRQ if PSTATE.I allows it."""
        if self.gic is None:
            return
        self._update_timers()
        uc = self.uc
        pstate = uc.reg_read(a64.UC_ARM64_REG_PSTATE)
        if pstate & (1 << 7) or not self.gic.pending_irq():
            return
        self._aarch64_enter(0x80, uc.reg_read(a64.UC_ARM64_REG_PC), None)

    def _aarch64_enter(self, kind_offset: int, elr: int, esr: int | None) -> bool:
        """Exception entry to EL1 at VBAR_EL1 + table offset; False if there is no table."""
        uc = self.uc
        pstate = uc.reg_read(a64.UC_ARM64_REG_PSTATE)
        vbar = uc.cpr_read(3, 0, 12, 0, 0)
        # Only EL1 -> EL1 is modelled: from EL0 the stack pointer would need banking.
        if (pstate >> 2) & 3 != 1 or vbar == 0:
            return False
        base = 0x200 if pstate & 1 else 0x000  # current EL with SP_ELx, or with SP_EL0
        uc.reg_write(a64.UC_ARM64_REG_PSTATE, 0x3C5)  # EL1h, DAIF masked
        uc.cpr_write(3, 0, 4, 0, 1, elr)  # ELR_EL1; a CP_REG write also refreshes the cached EL
        uc.cpr_write(3, 0, 4, 0, 0, pstate)  # SPSR_EL1
        if esr is not None:
            uc.cpr_write(3, 0, 5, 2, 0, esr)  # ESR_EL1
        uc.reg_write(a64.UC_ARM64_REG_PC, vbar + base + kind_offset)
        return True

    # aarch64 exception classes (ESR_EL1.EC) for the traps unicorn hands us, and IL (32-bit).
    _EC_UNKNOWN, _EC_SVC64 = 0x00, 0x15
    _ESR_IL = 1 << 25

    def _aarch64_sync(self, intno: int) -> None:
        """Take a synchronous exception to EL1 through VBAR_EL1, as the CPU would have."""
        uc = self.uc
        pc = uc.reg_read(a64.UC_ARM64_REG_PC)
        if intno == 1:  # undefined instruction: pc at it, and it is where ERET returns
            esr, elr = self._EC_UNKNOWN << 26 | self._ESR_IL, pc
        elif intno == 2:  # SVC: pc already after it; ISS is the immediate
            insn = struct.unpack("<I", uc.mem_read(pc - 4, 4))[0]
            esr, elr = self._EC_SVC64 << 26 | self._ESR_IL | (insn >> 5) & 0xFFFF, pc
        else:
            self._fault(f"exception {intno}")
            return
        if not self._aarch64_enter(0x000, elr, esr):
            self._fault(f"exception {intno} with no EL1 vector table")

    def _riscv_trap(self, cause: int, epc: int) -> None:
        """Enter machine mode at mtvec as the hart would (unicorn does not vector traps)."""
        uc = self.uc
        mtvec = uc.reg_read(rv.UC_RISCV_REG_MTVEC)
        if mtvec == 0:
            self._fault(f"trap (mcause {cause:#x}) with no mtvec")
            return
        priv = uc.reg_read(rv.UC_RISCV_REG_PRIV)
        uc.reg_write(rv.UC_RISCV_REG_PRIV, 3)  # CSR writes through the API obey privilege
        mstatus = uc.reg_read(rv.UC_RISCV_REG_MSTATUS)
        mie = (mstatus >> 3) & 1
        mstatus = (mstatus & ~(1 << 3 | 1 << 7 | 3 << 11)) | mie << 7 | priv << 11
        uc.reg_write(rv.UC_RISCV_REG_MSTATUS, mstatus)
        uc.reg_write(rv.UC_RISCV_REG_MEPC, epc)
        uc.reg_write(rv.UC_RISCV_REG_MCAUSE, cause)
        uc.reg_write(rv.UC_RISCV_REG_MTVAL, 0)
        interrupt = cause >> 63
        vectored = mtvec & 3 == 1 and interrupt
        target = (mtvec & ~3) + (4 * (cause & 0xFF) if vectored else 0)
        uc.reg_write(rv.UC_RISCV_REG_PC, target)

    def _riscv_poll(self) -> None:
        """Deliver a due machine timer / software interrupt between slices."""
        if self.clint is None:
            return
        uc = self.uc
        priv = uc.reg_read(rv.UC_RISCV_REG_PRIV)
        mie = uc.reg_read(rv.UC_RISCV_REG_MIE)
        enabled = priv < 3 or uc.reg_read(rv.UC_RISCV_REG_MSTATUS) & (1 << 3)
        if not enabled:
            return
        for bit, pending in ((3, self.clint.software_pending), (7, self.clint.timer_pending)):
            if mie & (1 << bit) and pending():
                self._riscv_trap(1 << 63 | bit, uc.reg_read(rv.UC_RISCV_REG_PC))
                return

    def _idle(self) -> None:
        """The guest waits for an interrupt: sleep until the next timer event (bounded)."""
        wait_ns = 10_000_000
        if self.clint is not None:
            wait_ns = min(self.clint.ns_until_timer(), wait_ns)
        if self.arch == "aarch64":
            now = self.counter()
            for timer in self.timers.values():
                if timer.ctl & 3 == 1:
                    wait_ns = min(wait_ns, max(0, timer.cval - now) * 16)  # 62.5 MHz ticks
        if wait_ns:
            time.sleep(wait_ns / 1e9)

    def _fault(self, what: str) -> None:
        pc = self.uc.reg_read(self.config.board.cpu.pc)
        self.fault = f"guest {what} at pc 0x{pc:x}"
        self.exit_status = 1
        self.uc.emu_stop()

    def run(self) -> int:
        """Run until the guest powers off; returns the exit status."""
        cpu = self.config.board.cpu
        wfi = _WFI[self.arch]
        self.fault = ""
        while self.exit_status is None:
            pc = self.uc.reg_read(cpu.pc)
            try:
                self.uc.emu_start(pc, _NEVER, count=SLICE)
            except UcError as exc:
                if self.exit_status is None:
                    raise MachineError(f"guest stopped: {exc} at pc 0x{pc:x}") from None
            if self.exit_status is not None:
                break
            pc = self.uc.reg_read(cpu.pc)
            try:
                last = struct.unpack("<I", self.uc.mem_read(pc - 4, 4))[0]
            except UcError:
                last = 0
            if last == wfi:
                self._idle()
            if self.arch == "riscv64":
                self._riscv_poll()
            else:
                self._aarch64_poll()
        if self.fault:
            raise MachineError(self.fault)
        return self.exit_status


@dataclass
class GenericTimer:
    """One ARM generic timer's registers (CTL bits ENABLE and IMASK, compare value)."""

    ctl: int = 0
    cval: int = 0


def _align(value: int, to: int) -> int:
    return -(-value // to) * to
