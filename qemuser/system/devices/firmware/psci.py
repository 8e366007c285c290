"""PSCI (Arm Power State Coordination Interface) firmware calls, answered in Python."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from qemuser.system.devices.base import Device, FdtContext
from qemuser.system.devices.registry import board_device
from qemuser.system.fdt import Node

# Return codes (PSCI spec, "Return error codes"), as the 64-bit values x0 receives.
SUCCESS, NOT_SUPPORTED, INVALID_PARAMETERS, ALREADY_ON = 0, -1, -2, -4
AFF_ON, AFF_OFF = 0, 1  # AFFINITY_INFO's answers
MPIDR_AFFINITY = 0xFF_00FF_FFFF  # Aff3, Aff2, Aff1, Aff0


def _x0(value: int) -> int:
    return value & 0xFFFF_FFFF_FFFF_FFFF


class PsciCpu(Protocol):
    """A CPU as PSCI's power calls see it."""

    mpidr: int  # its affinity (MPIDR_EL1 without the RES1 and U bits)
    online: bool

    def power_on(self, entry: int, context_id: int) -> None:
        """Start at `entry` in EL1 with the MMU off and x0 = context_id."""
        ...

    def power_off(self) -> None:
        """Stop: the CPU runs no more until a CPU_ON names it."""
        ...


@board_device
@dataclass
class Psci(Device):
    """PSCI 1.0 firmware calls (no MMIO): the machine forwards HVC/SMC function ids here."""

    kind: ClassVar[str] = "psci"
    description: ClassVar[str] = "PSCI firmware interface over HVC/SMC"
    size: int = 0
    method: str = "hvc"
    cpus: list[PsciCpu] = field(default_factory=list, repr=False, compare=False)

    VERSION, CPU_OFF, SYSTEM_OFF, SYSTEM_RESET, FEATURES = (
        0x8400_0000,
        0x8400_0002,
        0x8400_0008,
        0x8400_0009,
        0x8400_000A,
    )
    # SMC32 and SMC64 conventions: function ids that take addresses come in both.
    CPU_ON_32, CPU_ON_64 = 0x8400_0003, 0xC400_0003
    AFFINITY_INFO_32, AFFINITY_INFO_64 = 0x8400_0004, 0xC400_0004
    NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF  # -1
    _KNOWN: ClassVar[frozenset[int]] = frozenset(
        {
            0x8400_0000,
            0x8400_0002,
            0x8400_0003,
            0x8400_0004,
            0x8400_0008,
            0x8400_0009,
            0x8400_000A,
            0xC400_0003,
            0xC400_0004,
        }
    )

    def call(self, function: int, arg: int, arg2: int = 0, arg3: int = 0, caller: int = 0) -> int:
        """Run one PSCI call from CPU `caller`; returns the value for x0."""
        function &= 0xFFFF_FFFF
        if function in (self.CPU_ON_32, self.CPU_ON_64):
            if function == self.CPU_ON_32:
                arg, arg2, arg3 = arg & 0xFFFF_FFFF, arg2 & 0xFFFF_FFFF, arg3 & 0xFFFF_FFFF
            return _x0(self._cpu_on(arg, arg2, arg3))
        if function == self.CPU_OFF:
            if len(self.cpus) <= caller:
                return _x0(NOT_SUPPORTED)
            self.cpus[caller].power_off()
            return SUCCESS  # not seen: the caller does not return
        if function in (self.AFFINITY_INFO_32, self.AFFINITY_INFO_64):
            return _x0(self._affinity_info(arg, arg2))
        if function == self.VERSION:
            return 0x0001_0000  # PSCI 1.0
        if function == self.SYSTEM_OFF:
            self.host.power_off(0)
            return 0
        if function == self.SYSTEM_RESET:
            self.host.reset()
            return 0
        if function == self.FEATURES:
            return 0 if (arg & 0xFFFF_FFFF) in self._KNOWN else self.NOT_SUPPORTED
        return self.NOT_SUPPORTED

    def _find(self, mpidr: int) -> PsciCpu | None:
        return next((c for c in self.cpus if c.mpidr == mpidr & MPIDR_AFFINITY), None)

    def _cpu_on(self, target: int, entry: int, context_id: int) -> int:
        cpu = self._find(target)
        if cpu is None:
            return INVALID_PARAMETERS
        if cpu.online:
            return ALREADY_ON
        cpu.power_on(entry, context_id)
        return SUCCESS

    def _affinity_info(self, target: int, level: int) -> int:
        cpu = self._find(target)
        if cpu is None or level & 0xFFFF_FFFF != 0:
            return INVALID_PARAMETERS
        return AFF_ON if cpu.online else AFF_OFF

    def fdt(self, root: Node, ctx: FdtContext) -> None:
        root.child(
            "psci",
            compatible=["arm,psci-1.0", "arm,psci-0.2", "arm,psci"],
            method=self.method,
            cpu_on=0xC400_0003,
            cpu_off=0x8400_0002,
            cpu_suspend=0xC400_0001,
            migrate=0xC400_0005,
        )
