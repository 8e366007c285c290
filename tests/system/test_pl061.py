"""The aarch64 virt board's PL061 GPIO with the power button on line 3 (QEMU's gpio-keys)."""

from __future__ import annotations

from qemuser.system.devices.base import FdtContext, NullHost
from qemuser.system.devices.gpio.pl061 import IBE, IC, IE, MIS, RIS, Pl061
from qemuser.system.fdt import Node


def test_power_button_edges_raise_the_interrupt_as_gpio_keys_programs_it() -> None:
    gpio = Pl061(base=0x0903_0000, irq=7)
    host = NullHost()
    gpio.attach(host)
    assert [gpio.read(0xFE0 + 4 * i, 4) for i in range(4)] == [0x61, 0x10, 0x04, 0x00]
    gpio.write(IBE, 4, 1 << 3)  # gpio-keys asks for both edges
    gpio.write(IE, 4, 1 << 3)
    gpio.set_input(3, True)  # pressed
    assert host.irqs[7] is True
    assert gpio.read(RIS, 4) == gpio.read(MIS, 4) == 1 << 3
    assert gpio.read(0x3FC, 4) == 1 << 3  # GPIODATA with every bit in the address mask
    assert gpio.read(0x20, 4) == 1 << 3 and gpio.read(0x10, 4) == 0  # address bits select
    gpio.write(IC, 4, 1 << 3)
    assert host.irqs[7] is False
    gpio.set_input(3, False)  # released: the other edge
    assert host.irqs[7] is True and gpio.read(0x3FC, 4) == 0


def test_device_tree_has_the_controller_and_the_key() -> None:
    root = Node("")
    ctx = FdtContext(interrupt_parent=1, clock=2, gic=True, root=root)
    Pl061(base=0x0903_0000, irq=7).fdt(root, ctx)
    node = root.find("pl061@9030000")
    assert node is not None and node.props["compatible"] == ["arm,pl061", "arm,primecell"]
    key = root.find("gpio-keys/poweroff")
    assert key is not None
    assert key.props["gpios"] == [node.props["phandle"], 3, 0]
    assert key.props["linux,code"] == 116
