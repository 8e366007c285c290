"""CFI parallel NOR flash (Intel/Sharp command set), as QEMU's pflash_cfi01 on the virt board.

QEMU's virt flash banks are `cfi.pflash01` devices with width=4 and device-width=2: a 32-bit
bus made of two interleaved x16 chips. Firmware talks to both chips at once: EDK2's
NorFlashDxe writes each command to both 16-bit lanes (0x00FF00FF) and polls the status
register until both chips say ready (0x00800080); U-Boot probes the geometry through the CFI
query. So every reply (status, identifier, query table) is one chip's 16-bit answer repeated
in each lane, and query/identifier addresses are counted in 32-bit bus words.

The command state machine follows hw/block/pflash_cfi01.c (QEMU 7.2): a write in read-array
mode starts a command (`cmd`, `wcycle` counts its bus cycles); program, erase, buffered program
and lock commands leave the status register readable until the next command. Contents come
from a backing image when one is given (-drive if=pflash, -machine pflash1=NODE) and every
program or erase is written back to it at once, unless it is read-only; without one the bank
starts as zeros (QEMU's empty pflash) and lives in memory only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qemuser.system import debuglog
from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.registry import board_device
from qemuser.system.drive import BlockBackend
from qemuser.system.fdt import Node

# Status register bits (Intel StrataFlash SR).
SR_READY = 0x80  # SR.7: write state machine ready
SR_ERASE_ERROR = 0x20  # SR.5
SR_PROGRAM_ERROR = 0x10  # SR.4

# The commands that leave the status register on the bus (pflash_read's status cases).
_STATUS_COMMANDS = frozenset({0x10, 0x20, 0x28, 0x40, 0x50, 0x60, 0x70, 0xE8})


class FlashImageError(Exception):
    """A backing image that does not fit the bank (reported as one line)."""


@board_device
@dataclass
class CfiFlash(Device):
    """A bank of `bank_width // device_width` interleaved CFI chips answering through MMIO.

    The virt board uses this for bank 1 (EDK2's variable store, U-Boot's environment). Bank 0,
    where -bios runs, stays plain memory: unicorn cannot execute from MMIO.
    """

    kind: ClassVar[str] = "cfi.pflash01"
    description: ClassVar[str] = "CFI parallel NOR flash (Intel command set)"
    size: int = 0x400_0000
    sector_len: int = 0x4_0000  # the bus-level erase block (256 KiB on virt)
    bank_width: int = 4  # bytes on the bus
    device_width: int = 2  # bytes per chip
    ident: tuple[int, int] = (0x89, 0x18)  # manufacturer (Intel), device, as virt sets them
    label: str = "pflash1"
    cmd: int = 0
    wcycle: int = 0
    status: int = SR_READY  # QEMU's reset value: WSM ready
    counter: int = 0
    read_only: bool = False
    backend: BlockBackend | None = field(default=None, repr=False, compare=False)
    # The whole bank's contents, created at first use: a board declaration is deep-copied per
    # machine, so it must not carry 64 MiB.
    _storage: bytearray | None = field(default=None, repr=False, compare=False)

    READ_ARRAY, QUERY, READ_ID, READ_STATUS, CLEAR_STATUS = 0xFF, 0x98, 0x90, 0x70, 0x50
    PROGRAM, BUFFERED_PROGRAM, ERASE, CONFIRM, LOCK_SETUP = 0x40, 0xE8, 0x20, 0xD0, 0x60

    # --- contents ---------------------------------------------------------------------------
    def load_backend(self, backend: BlockBackend) -> None:
        """Take the bank's contents from an image; it must be exactly the bank's size."""
        if backend.size != self.size:
            raise FlashImageError(
                f"device requires {self.size} bytes, block backend provides {backend.size} bytes"
            )
        self.backend = backend
        self.read_only = backend.read_only
        self._storage = bytearray(backend.read(0, self.size))

    def load_bytes(self, data: bytes) -> None:
        """Contents from memory (a test, or firmware placed without a backing file)."""
        self.storage[: len(data)] = data

    @property
    def storage(self) -> bytearray:
        if self._storage is None:
            self._storage = bytearray(self.size)
        return self._storage

    def _persist(self, offset: int, length: int) -> None:
        if self.backend is not None and not self.read_only:
            self.backend.write(offset, bytes(self.storage[offset : offset + length]))

    # --- the CFI answers, one chip's reply repeated in every lane ---------------------------
    @property
    def chips(self) -> int:
        return self.bank_width // self.device_width

    def query_table(self) -> bytes:
        """One chip's CFI query structure (JEDEC JESD68) as QEMU fills it, a byte per entry."""
        table = bytearray(0x52)
        blocks = self.size // self.sector_len  # each chip has as many blocks, narrower
        chip_sector = self.sector_len // self.chips
        table[0x10:0x13] = b"QRY"
        table[0x13:0x17] = bytes([0x01, 0x00, 0x31, 0x00])  # Intel command set; ext at 0x31
        table[0x1B:0x1F] = bytes([0x45, 0x55, 0x00, 0x00])  # Vcc 4.5-5.5 V, no Vpp
        table[0x1F:0x27] = bytes([0x07, 0x07, 0x0A, 0x00, 0x04, 0x04, 0x04, 0x00])  # timeouts
        table[0x27] = (chip_sector * blocks).bit_length() - 1  # one chip's size: 2^n bytes
        table[0x28:0x2A] = bytes([0x02, 0x00])  # x8/x16 interface
        table[0x2A] = 0x0B if self.bank_width > 1 else 0x08  # write buffer: 2^n bytes
        table[0x2C] = 1  # one uniform erase-block region
        table[0x2D:0x31] = bytes(
            [(blocks - 1) & 0xFF, (blocks - 1) >> 8, (chip_sector >> 8) & 0xFF, chip_sector >> 16]
        )
        table[0x31:0x36] = b"PRI10"  # Intel primary extended query, version 1.0
        table[0x3F] = 0x01  # protection fields
        return bytes(table)

    def _replicate(self, chip_value: int) -> int:
        """A chip's answer on every lane of one bus word."""
        value = 0
        for lane in range(self.chips):
            value |= (chip_value & ((1 << (8 * self.device_width)) - 1)) << (
                8 * self.device_width * lane
            )
        return value

    def _bus_word(self, offset: int) -> int:
        """The chip-level address of a bus offset (CFI addresses count bus words)."""
        return offset // self.bank_width

    def _command_word(self, offset: int) -> int:
        """One bus word's reply while a command other than read-array is active."""
        if self.cmd == 0x90:
            index = self._bus_word(offset) & 0xFF
            chip = self.ident[index] if index < len(self.ident) else 0
            return self._replicate(chip)
        if self.cmd == 0x98:
            index = self._bus_word(offset)
            table = self.query_table()
            return self._replicate(table[index]) if index < len(table) else 0
        return self._replicate(self.status)

    def read(self, offset: int, size: int) -> int:
        if self.cmd not in _STATUS_COMMANDS and self.cmd not in (0x90, 0x98):
            data = self.storage[offset : offset + size]  # read array
            return int.from_bytes(data, "little")
        # Narrower reads see the low lanes of the word; wider ones several words.
        value = 0
        for done in range(0, max(size, self.bank_width), self.bank_width):
            value |= self._command_word(offset + done) << (8 * done)
        return value & ((1 << (8 * size)) - 1)

    # --- commands ---------------------------------------------------------------------------
    def _read_array(self) -> None:
        self.cmd = 0
        self.wcycle = 0

    def _data_write(self, offset: int, size: int, value: int) -> None:
        if self.read_only:
            self.status |= SR_PROGRAM_ERROR
            return
        self.storage[offset : offset + size] = value.to_bytes(size, "little")
        self._persist(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        command = value & 0xFF
        if self.wcycle == 0:
            self._first_cycle(offset, command)
        elif self.wcycle == 1:
            self._second_cycle(offset, size, value, command)
        elif self.wcycle == 2 and self.cmd == 0xE8:
            self._data_write(offset, size, value)
            self.status |= SR_READY
            if self.counter == 0:
                self.wcycle = 3  # the buffer is full: a confirm follows
            self.counter -= 1
        elif self.wcycle == 3 and self.cmd == 0xE8 and command == self.CONFIRM:
            self.wcycle = 0
            self.status |= SR_READY
        else:
            self._unimplemented(offset, value)

    def _unimplemented(self, offset: int, value: int) -> None:
        """An unknown sequence resets the chip, as QEMU's, which logs it under -d unimp."""
        debuglog.log(
            "unimp",
            f"pflash_write: Unimplemented flash cmd sequence (offset 0x{offset:x}, wcycle "
            f"0x{self.wcycle:x} cmd 0x{self.cmd:x} value 0x{value:x})\n",
        )
        self._read_array()

    def _first_cycle(self, offset: int, command: int) -> None:
        if command in (0x00, 0xF0, 0xFF):  # read array (0xF0: AMD's reset, probed by U-Boot)
            self._read_array()
            return
        if command == self.CLEAR_STATUS:
            self.status = 0
            self._read_array()
            return
        if command in (self.READ_STATUS, self.READ_ID):
            self.cmd = command  # no further cycle
            return
        if command == self.ERASE:
            start = offset - offset % self.sector_len
            if self.read_only:
                self.status |= SR_ERASE_ERROR
            else:
                self.storage[start : start + self.sector_len] = b"\xff" * self.sector_len
                self._persist(start, self.sector_len)
            self.status |= SR_READY
        elif command == self.BUFFERED_PROGRAM:
            self.status |= SR_READY
        elif command not in (0x10, self.PROGRAM, self.LOCK_SETUP, self.QUERY):
            self._unimplemented(offset, command)
            return
        self.cmd = command
        self.wcycle = 1

    def _second_cycle(self, offset: int, size: int, value: int, command: int) -> None:
        if self.cmd in (0x10, self.PROGRAM):
            self._data_write(offset, size, value)
            self.status |= SR_READY
            self.wcycle = 0
        elif self.cmd in (self.ERASE, 0x28, self.LOCK_SETUP):
            # Erase confirm; lock (0x01) or unlock (0xD0): locking is not modelled.
            if command == self.CONFIRM or (self.cmd == self.LOCK_SETUP and command == 0x01):
                self.wcycle = 0
                self.status |= SR_READY
            elif command == self.READ_ARRAY or self.cmd == self.LOCK_SETUP:
                self._read_array()
            else:
                self._unimplemented(offset, value)
        elif self.cmd == self.BUFFERED_PROGRAM:
            # The word count minus one, per chip: each bus write fills one word of each chip.
            self.counter = value & ((1 << (8 * self.device_width)) - 1)
            self.wcycle = 2
        elif self.cmd == self.QUERY:
            if command == self.READ_ARRAY:
                self._read_array()
        else:
            self._unimplemented(offset, value)

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        root.child(
            self.node_name("flash"),
            bank_width=self.bank_width,
            reg=self.reg(),
            compatible="cfi-flash",
        )
