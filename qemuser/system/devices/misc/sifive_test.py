"""The SiFive test finisher (poweroff / reboot) of QEMU's riscv virt board."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node


@board_device
@dataclass
class SifiveTest(Device):
    """SiFive test finisher: 0x5555 powers off (pass), 0x3333 fails with code, 0x7777 resets."""

    kind: ClassVar[str] = "sifive_test"
    description: ClassVar[str] = "SiFive test device (poweroff / reboot)"
    FINISHER_FAIL, FINISHER_PASS, FINISHER_RESET = 0x3333, 0x5555, 0x7777

    def write(self, offset: int, size: int, value: int) -> None:
        if offset != 0:
            return
        code = value & 0xFFFF
        if code == self.FINISHER_PASS:
            self.host.power_off(0)
        elif code == self.FINISHER_FAIL:
            self.host.power_off((value >> 16) & 0xFFFF)
        elif code == self.FINISHER_RESET:
            self.host.reset()

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        node = root.child(
            self.node_name("test"),
            compatible=["sifive,test1", "sifive,test0", "syscon"],
            reg=self.reg(),
            phandle=ctx.phandle(),
        )
        # Linux's syscon-poweroff / syscon-reboot drivers find the device through these, which
        # QEMU's virt puts at the root of the tree, outside /soc.
        top = ctx.root if ctx.root is not None else root
        top.child(
            "poweroff",
            compatible="syscon-poweroff",
            regmap=node.props["phandle"],
            offset=0,
            value=self.FINISHER_PASS,
        )
        top.child(
            "reboot",
            compatible="syscon-reboot",
            regmap=node.props["phandle"],
            offset=0,
            value=self.FINISHER_RESET,
        )
