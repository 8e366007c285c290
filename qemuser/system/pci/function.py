"""One PCI function: its configuration space (type 0 header, capability list) and its BARs.

The layout is the PCI Local Bus 3.0 type 0 header (include/uapi/linux/pci_regs.h names the
offsets). A function's config space is 4 KiB (PCI Express extended space reads as zeros). BARs
are sized the usual way: the driver writes all ones and reads back the size mask; the host
bridge decodes memory accesses to a BAR only while the command register enables memory space.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Header offsets (include/uapi/linux/pci_regs.h)
VENDOR_ID, DEVICE_ID, COMMAND, STATUS = 0x00, 0x02, 0x04, 0x06
REVISION_ID, CLASS_PROG, CLASS_DEVICE = 0x08, 0x09, 0x0A
HEADER_TYPE, BAR0, SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID = 0x0E, 0x10, 0x2C, 0x2E
ROM_ADDRESS, CAPABILITY_LIST, INTERRUPT_LINE, INTERRUPT_PIN = 0x30, 0x34, 0x3C, 0x3D

COMMAND_IO, COMMAND_MEMORY, COMMAND_MASTER, COMMAND_INTX_DISABLE = 0x1, 0x2, 0x4, 0x400
STATUS_INTERRUPT, STATUS_CAP_LIST = 0x08, 0x10
# What a driver may change in the command register (I/O, memory, bus master, parity/SERR,
# INTx disable); the rest of it is read-only zero here.
COMMAND_WRITABLE = 0x0547

BAR_IO, BAR_MEM64, BAR_PREFETCH = 0x1, 0x4, 0x8
CONFIG_SPACE = 4096


@dataclass(frozen=True)
class Bar:
    """A BAR of `size` bytes (a power of two); `io` BARs live in the I/O window."""

    index: int
    size: int
    mem64: bool = False
    prefetchable: bool = False
    io: bool = False

    @property
    def flags(self) -> int:
        if self.io:
            return BAR_IO
        return (BAR_MEM64 if self.mem64 else 0) | (BAR_PREFETCH if self.prefetchable else 0)


class PciFunction:
    """A function's config space and BAR state; subclasses provide `bar_read`/`bar_write`.

    `intx` is set by the host bridge when the function is plugged: the board line its INTA#
    reaches after swizzling.
    """

    def __init__(
        self,
        vendor: int,
        device: int,
        class_code: int,
        revision: int = 0,
        subsystem_vendor: int = 0,
        subsystem: int = 0,
        bars: tuple[Bar, ...] = (),
        interrupt_pin: int = 1,
    ) -> None:
        self.config = bytearray(CONFIG_SPACE)
        struct.pack_into("<HH", self.config, VENDOR_ID, vendor, device)
        self.config[REVISION_ID] = revision
        self.config[CLASS_PROG : CLASS_PROG + 3] = class_code.to_bytes(3, "little")
        struct.pack_into("<HH", self.config, SUBSYSTEM_VENDOR_ID, subsystem_vendor, subsystem)
        self.config[INTERRUPT_PIN] = interrupt_pin
        self.bars = {bar.index: bar for bar in bars}
        self.bar_addresses = {bar.index: 0 for bar in bars}
        for bar in bars:
            self._store_bar(bar, 0)
        self._cap_tail = 0  # offset of the last capability's "next" byte, 0: none yet
        self.intx_asserted = False
        self.set_intx_line = lambda level: None  # replaced by the host bridge at plug time

    # --- capabilities ---
    def add_capability(self, cap_id: int, body: bytes, offset: int) -> int:
        """Put a capability (id, next, body...) at `offset` and chain it; returns `offset`."""
        self.config[offset] = cap_id
        self.config[offset + 1] = 0
        self.config[offset + 2 : offset + 2 + len(body)] = body
        if self._cap_tail:
            self.config[self._cap_tail] = offset
        else:
            self.config[CAPABILITY_LIST] = offset
            status = struct.unpack_from("<H", self.config, STATUS)[0] | STATUS_CAP_LIST
            struct.pack_into("<H", self.config, STATUS, status)
        self._cap_tail = offset + 1
        return offset

    # --- config space accesses (from the ECAM window) ---
    def config_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset : offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        for i, byte in enumerate(data):
            self._write_byte(offset + i, byte)

    def _write_byte(self, offset: int, byte: int) -> None:
        if offset in (COMMAND, COMMAND + 1):
            old = struct.unpack_from("<H", self.config, COMMAND)[0]
            shift = 8 * (offset - COMMAND)
            new = (old & ~(0xFF << shift)) | (byte << shift)
            struct.pack_into("<H", self.config, COMMAND, new & COMMAND_WRITABLE)
            self._update_intx()
        elif offset in (STATUS, STATUS + 1):
            pass  # the error bits are write-one-to-clear and never set here
        elif BAR0 <= offset < BAR0 + 24:
            index = (offset - BAR0) // 4
            raw = bytearray(self.config[BAR0 + 4 * index : BAR0 + 4 * index + 4])
            raw[offset % 4] = byte
            self._write_bar_dword(index, int.from_bytes(raw, "little"))
        elif offset == INTERRUPT_LINE:
            self.config[offset] = byte  # firmware's scratch byte: kept, never used here
        elif ROM_ADDRESS <= offset < ROM_ADDRESS + 4:
            pass  # no expansion ROM: the register reads as zero, so sizing finds none
        else:
            # The rest of the header and the capabilities are read-only here; subclasses with
            # writable capability fields override capability_write.
            self.capability_write(offset, byte)

    def capability_write(self, offset: int, byte: int) -> None:
        """A byte written past the header's writable fields (read-only by default)."""

    def _write_bar_dword(self, index: int, value: int) -> None:
        bar = self.bars.get(index)
        upper_of = self.bars.get(index - 1)
        if bar is None and upper_of is not None and upper_of.mem64:
            # The high half of a 64-bit BAR.
            low = self.bar_addresses[upper_of.index] & 0xFFFF_FFFF
            mask_high = ~((upper_of.size - 1) >> 32) & 0xFFFF_FFFF
            address = ((value & mask_high) << 32) | low
            self.bar_addresses[upper_of.index] = address
            self._store_bar(upper_of, address)
            return
        if bar is None:
            return  # an unimplemented BAR stays hardwired to zero
        high = self.bar_addresses[index] & ~0xFFFF_FFFF if bar.mem64 else 0
        address = high | (value & ~(bar.size - 1) & 0xFFFF_FFFF)
        self.bar_addresses[index] = address
        self._store_bar(bar, address)

    def _store_bar(self, bar: Bar, address: int) -> None:
        low = (address & 0xFFFF_FFFF & ~(bar.size - 1)) | bar.flags
        struct.pack_into("<I", self.config, BAR0 + 4 * bar.index, low & 0xFFFF_FFFF)
        if bar.mem64:
            struct.pack_into("<I", self.config, BAR0 + 4 * bar.index + 4, address >> 32)

    # --- decoding ---
    @property
    def command(self) -> int:
        return struct.unpack_from("<H", self.config, COMMAND)[0]

    def decoded_bar(self, address: int, io: bool) -> tuple[int, int] | None:
        """(bar index, offset) of an access the function claims, if any."""
        enabled = COMMAND_IO if io else COMMAND_MEMORY
        if not self.command & enabled:
            return None
        for index, bar in self.bars.items():
            base = self.bar_addresses[index]
            if bar.io == io and base and base <= address < base + bar.size:
                return index, address - base
        return None

    def bar_read(self, index: int, offset: int, size: int) -> int:
        return 0

    def bar_write(self, index: int, offset: int, size: int, value: int) -> None:
        pass

    # --- INTx ---
    def set_intx(self, level: bool) -> None:
        """The function's INTx# input; reported in status, masked by command's INTx disable."""
        self.intx_asserted = level
        status = struct.unpack_from("<H", self.config, STATUS)[0]
        status = status | STATUS_INTERRUPT if level else status & ~STATUS_INTERRUPT
        struct.pack_into("<H", self.config, STATUS, status)
        self._update_intx()

    def _update_intx(self) -> None:
        self.set_intx_line(self.intx_asserted and not self.command & COMMAND_INTX_DISABLE)
