"""Device registers driven directly, no unicorn: each write's effect on the host and registers."""

from __future__ import annotations

import struct

from qemuser.system.devices.base import FdtContext, NullHost
from qemuser.system.devices.char.ns16550 import Ns16550
from qemuser.system.devices.char.pl011 import Pl011
from qemuser.system.devices.firmware.psci import Psci
from qemuser.system.devices.intc.clint import Clint
from qemuser.system.devices.intc.gicv2 import GicV2
from qemuser.system.devices.misc.sifive_test import SifiveTest
from qemuser.system.devices.rtc.pl031 import Pl031
from qemuser.system.fdt import FDT_MAGIC, Node


def attached(device):
    host = NullHost()
    device.attach(host)
    return device, host


def test_pl011_transmit_flags_and_ids() -> None:
    uart, host = attached(Pl011(base=0x0900_0000, irq=1))
    uart.write(Pl011.DR, 4, ord("A"))
    assert host.console == b"A"
    assert uart.read(Pl011.FR, 4) == Pl011.FR_TXFE | Pl011.FR_RXFE
    assert [uart.read(off, 4) for off in range(0xFE0, 0x1000, 4)] == list(Pl011._IDS)


def test_pl011_receive_raises_and_clears_irq() -> None:
    uart, host = attached(Pl011(base=0, irq=1))
    uart.write(Pl011.IMSC, 4, Pl011.INT_RX)
    uart.feed_input(b"x")
    assert host.irqs[1] is True
    assert uart.read(Pl011.FR, 4) & Pl011.FR_RXFE == 0
    assert uart.read(Pl011.DR, 4) == ord("x")
    assert host.irqs[1] is False


def test_pl011_receive_fifo_flags() -> None:
    uart, _ = attached(Pl011(base=0, irq=1))
    uart.write(Pl011.LCR_H, 4, Pl011.LCR_H_FEN)
    uart.feed_input(bytes(range(20)))
    assert uart.read(Pl011.FR, 4) == Pl011.FR_TXFE | Pl011.FR_RXFF
    assert [uart.read(Pl011.DR, 4) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert uart.read(Pl011.FR, 4) == Pl011.FR_TXFE  # 15 left: neither full nor empty
    uart.write(Pl011.LCR_H, 4, 0)  # FIFOs off: one waiting byte fills the holding register
    assert uart.read(Pl011.FR, 4) == Pl011.FR_TXFE | Pl011.FR_RXFF
    assert [uart.read(Pl011.DR, 4) for _ in range(15)] == list(range(5, 20))
    assert uart.read(Pl011.FR, 4) == Pl011.FR_TXFE | Pl011.FR_RXFE


def test_ns16550_lsr_dlab_and_rx_interrupt() -> None:
    uart, host = attached(Ns16550(base=0x1000_0000, irq=10))
    uart.write(0, 1, ord("z"))
    assert host.console == b"z"
    assert uart.read(5, 1) == Ns16550.LSR_THRE | Ns16550.LSR_TEMT
    uart.write(3, 1, 0x80)  # DLAB: offset 0 is the divisor latch, not the transmitter
    uart.write(0, 1, 3)
    assert uart.read(0, 1) == 3 and host.console == b"z"
    uart.write(3, 1, 0x03)
    uart.write(1, 1, Ns16550.IER_RDI)
    uart.feed_input(b"q")
    assert host.irqs[10] is True and uart.read(2, 1) == 0xC4
    assert uart.read(0, 1) == ord("q")
    assert host.irqs[10] is False


def test_sifive_test_pass_fail_reset() -> None:
    dev, host = attached(SifiveTest(base=0x10_0000))
    dev.write(0, 4, (7 << 16) | SifiveTest.FINISHER_FAIL)
    assert host.status == 7
    dev.write(0, 4, SifiveTest.FINISHER_PASS)
    assert host.status == 0
    dev.write(0, 4, SifiveTest.FINISHER_RESET)
    assert host.resets == 1


def test_psci_calls() -> None:
    psci, host = attached(Psci())
    assert psci.call(Psci.VERSION, 0) == 0x1_0000
    assert psci.call(Psci.FEATURES, Psci.SYSTEM_OFF) == 0
    assert psci.call(0x8400_00FF, 0) == Psci.NOT_SUPPORTED
    psci.call(Psci.SYSTEM_OFF, 0)
    assert host.status == 0


def test_pl031_set_time() -> None:
    rtc, _ = attached(Pl031(base=0x0901_0000))
    rtc.write(0x8, 4, 1000)
    assert abs(rtc.read(0, 4) - 1000) <= 1


def test_fdt_header_and_layout() -> None:
    root = Node("", {"#address-cells": 2})
    root.child("chosen", bootargs="console=ttyAMA0")
    blob = root.to_dtb()
    magic, total, off_struct, off_strings, _, version, last = struct.unpack_from(">7I", blob)
    assert (magic, total, version, last) == (FDT_MAGIC, len(blob), 17, 16)
    strings = blob[off_strings:]
    assert b"#address-cells\0" in strings and b"bootargs\0" in strings
    tokens = blob[off_struct:off_strings]
    assert tokens[:8] == struct.pack(">II", 1, 0)  # BEGIN_NODE "" (name padded to 4)
    assert tokens[-8:] == struct.pack(">II", 2, 9)  # END_NODE, END
    assert b"console=ttyAMA0\0" in tokens


def test_clint_mtime_follows_clock_and_mtimecmp_halves() -> None:
    clint, host = attached(Clint(base=0x0200_0000))
    host.clock_ns = 2_000_000_000  # 2 s at 10 MHz
    assert clint.read(Clint.MTIME, 8) == 20_000_000
    clint.write(Clint.MTIMECMP, 4, 20_000_100)
    clint.write(Clint.MTIMECMP + 4, 4, 0)
    assert clint.read(Clint.MTIMECMP, 8) == 20_000_100
    assert not clint.timer_pending() and clint.ns_until_timer() == 10_000
    host.clock_ns += 10_000
    assert clint.timer_pending()
    clint.write(Clint.MSIP, 4, 1)
    assert clint.software_pending()


def test_gicv2_acknowledge_priority_mask_and_eoi() -> None:
    gic, _ = attached(GicV2(base=0x0800_0000, cpu_base=0x0801_0000))
    assert gic.read(0x004, 4) == 288 // 32 - 1
    gic.set_line(33, True)  # board line 1 (the PL011)
    gic.write(0x000, 4, 1)
    gic.cpu_write(0x00, 4, 1)
    assert not gic.pending_irq()  # not enabled yet
    gic.write(0x104, 4, 1 << 1)  # ISENABLER1: id 33
    assert gic.read(0x184, 4) == 1 << 1
    assert not gic.pending_irq()  # PMR 0 masks every priority
    gic.cpu_write(0x04, 4, 0xF0)
    assert gic.pending_irq()
    assert gic.cpu_read(0x0C, 4) == 33
    assert not gic.pending_irq() and gic.cpu_read(0x0C, 4) == GicV2.SPURIOUS  # active
    gic.cpu_write(0x10, 4, 33)
    assert gic.pending_irq()  # still level-high after EOI
    gic.set_line(33, False)
    assert not gic.pending_irq()
    gic.write(0xF00, 4, 5)  # SGI 5 to ourselves
    gic.write(0x100, 4, 1 << 5)
    assert gic.cpu_read(0x0C, 4) == 5


def test_fdt_keyword_property_names() -> None:
    node = Node("").child("cpu@0", device_type="cpu", riscv__isa="rv64", clock_frequency=1)
    assert list(node.props) == ["device_type", "riscv,isa", "clock-frequency"]


def test_sifive_test_poweroff_and_reboot_nodes_sit_at_the_root_as_in_qemu() -> None:
    root = Node("")
    soc = root.child("soc")
    ctx = FdtContext(interrupt_parent=3, clock=0, gic=False, root=root)
    SifiveTest(base=0x10_0000).fdt(soc, ctx)
    test = soc.find("test@100000")
    assert test is not None and soc.find("poweroff") is None
    poweroff, reboot = root.find("poweroff"), root.find("reboot")
    assert poweroff is not None and reboot is not None
    assert poweroff.props["compatible"] == "syscon-poweroff"
    assert poweroff.props["regmap"] == reboot.props["regmap"] == test.props["phandle"]
    assert (poweroff.props["value"], reboot.props["value"]) == (0x5555, 0x7777)
