"""PLIC, NS16550A input and CFI flash registers, driven directly (no unicorn)."""

from __future__ import annotations

from qemuser.system.devices.base import FdtContext, NullHost
from qemuser.system.devices.char.ns16550 import Ns16550
from qemuser.system.devices.intc.plic import Plic
from qemuser.system.fdt import Node

M, S = Plic.M_CONTEXT, Plic.S_CONTEXT
CLAIM_S = Plic.CONTEXT + Plic.CONTEXT_STRIDE * S + 4
THRESHOLD_S = Plic.CONTEXT + Plic.CONTEXT_STRIDE * S
CLAIM_M = Plic.CONTEXT + 4


def plic_with(source: int, priority: int, context: int = S) -> Plic:
    plic = Plic(base=0x0C00_0000)
    plic.attach(NullHost())
    plic.write(4 * source, 4, priority)
    word = source // 32
    plic.write(Plic.ENABLE + Plic.ENABLE_STRIDE * context + 4 * word, 4, 1 << source % 32)
    return plic


def test_a_raised_line_is_pending_and_claimed_by_its_enabled_context_only() -> None:
    plic = plic_with(10, priority=1)
    assert not plic.context_pending(S)
    plic.set_line(10, True)
    assert plic.read(Plic.PENDING, 4) == 1 << 10
    assert plic.context_pending(S) and not plic.context_pending(M)
    assert plic.read(CLAIM_M, 4) == 0  # not enabled for machine mode
    assert plic.read(CLAIM_S, 4) == 10
    # Claimed: no longer pending, and the context's line drops until completion.
    assert plic.read(Plic.PENDING, 4) == 0
    assert not plic.context_pending(S)
    assert plic.read(CLAIM_S, 4) == 0


def test_level_line_still_high_at_completion_is_pending_again() -> None:
    plic = plic_with(10, priority=1)
    plic.set_line(10, True)
    assert plic.read(CLAIM_S, 4) == 10
    plic.write(CLAIM_S, 4, 10)  # complete while the device still holds the line
    assert plic.context_pending(S)
    assert plic.read(CLAIM_S, 4) == 10
    plic.set_line(10, False)
    plic.write(CLAIM_S, 4, 10)
    assert not plic.context_pending(S)
    assert plic.read(Plic.PENDING, 4) == 0


def test_priority_zero_and_threshold_mask_a_source() -> None:
    plic = plic_with(5, priority=0)
    plic.set_line(5, True)
    assert not plic.context_pending(S)  # priority 0 never interrupts
    plic.write(4 * 5, 4, 3)
    assert plic.read(4 * 5, 4) == 3
    plic.write(THRESHOLD_S, 4, 3)
    assert plic.read(THRESHOLD_S, 4) == 3
    assert not plic.context_pending(S)  # must be strictly above the threshold
    plic.write(THRESHOLD_S, 4, 2)
    assert plic.context_pending(S)


def test_claim_takes_highest_priority_then_lowest_id() -> None:
    plic = plic_with(3, priority=2)
    for source, priority in ((7, 5), (40, 5)):
        plic.write(4 * source, 4, priority)
    plic.write(Plic.ENABLE + Plic.ENABLE_STRIDE * S, 4, 1 << 3 | 1 << 7)
    plic.write(Plic.ENABLE + Plic.ENABLE_STRIDE * S + 4, 4, 1 << (40 - 32))
    assert plic.read(Plic.ENABLE + Plic.ENABLE_STRIDE * S + 4, 4) == 1 << 8
    for source in (3, 7, 40):
        plic.set_line(source, True)
    assert plic.read(Plic.PENDING + 4, 4) == 1 << 8
    assert [plic.read(CLAIM_S, 4) for _ in range(4)] == [7, 40, 3, 0]


def test_priorities_keep_three_bits_and_source_zero_does_not_exist() -> None:
    plic = plic_with(1, priority=0xFF)
    assert plic.read(4, 4) == 7
    plic.write(Plic.ENABLE + Plic.ENABLE_STRIDE * S, 4, 0xFFFF_FFFF)
    assert plic.read(Plic.ENABLE + Plic.ENABLE_STRIDE * S, 4) == 0xFFFF_FFFE
    plic.set_line(0, True)
    assert plic.read(Plic.PENDING, 4) == 0


def test_uart_receive_interrupt_reaches_the_plic() -> None:
    plic = plic_with(10, priority=1)

    class Host(NullHost):
        def set_irq(self, line: int, level: bool) -> None:
            plic.set_line(line, level)

    uart = Ns16550(base=0x1000_0000, irq=10)
    uart.attach(Host())
    uart.write(1, 1, Ns16550.IER_RDI)
    assert not plic.context_pending(S)
    uart.feed_input(b"ok")
    assert uart.read(5, 1) & Ns16550.LSR_DR
    assert uart.read(2, 1) == 0xC4  # received data available
    assert plic.read(CLAIM_S, 4) == 10
    assert uart.read(0, 1) == ord("o")
    plic.write(CLAIM_S, 4, 10)
    assert plic.context_pending(S)  # one byte still waiting: the line is still high
    assert plic.read(CLAIM_S, 4) == 10
    assert uart.read(0, 1) == ord("k")
    assert not uart.read(5, 1) & Ns16550.LSR_DR
    plic.write(CLAIM_S, 4, 10)
    assert not plic.context_pending(S)
    assert uart.take_input() is None


def test_plic_device_tree_node_matches_qemu_virt() -> None:
    root = Node("soc")
    Plic(base=0x0C00_0000).fdt(root, FdtContext(interrupt_parent=3, clock=0, gic=False, cpu_intc=2))
    node = root.find("plic@c000000")
    assert node is not None
    assert node.props["compatible"] == ["sifive,plic-1.0.0", "riscv,plic0"]
    assert node.props["riscv,ndev"] == 96
    assert node.props["reg"] == [0, 0x0C00_0000, 0, 0x60_0000]
    assert node.props["interrupts-extended"] == [2, 11, 2, 9]
    assert node.props["phandle"] == 3
    assert node.props["#interrupt-cells"] == 1


def test_ns16550_transmitter_empty_interrupt_is_an_event() -> None:
    uart = Ns16550(base=0x1000_0000, irq=10)
    host = NullHost()
    uart.attach(host)
    uart.write(1, 1, Ns16550.IER_THRI)  # enabling it with THR empty raises it
    assert host.irqs[10] is True
    assert uart.read(2, 1) == 0xC2
    assert host.irqs[10] is False  # reading IIR acknowledged it
    assert uart.read(2, 1) == 0xC1
    uart.write(0, 1, ord("a"))  # sent at once: THR empty again
    assert host.irqs[10] is True and host.console == b"a"
    uart.write(1, 1, 0)
    assert host.irqs[10] is False
