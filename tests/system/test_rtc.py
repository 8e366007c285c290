"""-rtc base= on both virt boards: the PL031 (aarch64) and the goldfish RTC (riscv64, as QEMU's
riscv virt has it), and the goldfish registers and alarm."""

from __future__ import annotations

import io
import time

import pytest

from qemuser.cli.system_options import UsageError, parse_rtc
from qemuser.system.boards import BOARDS
from qemuser.system.devices.base import NullHost
from qemuser.system.devices.rtc.goldfish import (
    ALARM_HIGH,
    ALARM_LOW,
    CLEAR_INTERRUPT,
    IRQ_ENABLED,
    TIME_HIGH,
    TIME_LOW,
    GoldfishRtc,
)
from qemuser.system.devices.rtc.pl031 import Pl031
from qemuser.system.machine import Machine, MachineConfig


def test_rtc_base_values() -> None:
    assert parse_rtc("base=utc,clock=host,driftfix=slew") == 0
    then = parse_rtc("base=2006-06-17T16:01:21")
    assert abs(then - (1150560081 - time.time())) < 5
    assert abs(parse_rtc("base=2006-06-17") - (1150502400 - time.time())) < 5
    with pytest.raises(UsageError, match="invalid datetime format"):
        parse_rtc("base=yesterday")


@pytest.mark.parametrize(("arch", "kind"), [("aarch64", Pl031), ("riscv64", GoldfishRtc)])
def test_the_offset_reaches_the_boards_clock(arch: str, kind: type) -> None:
    config = MachineConfig(board=BOARDS[arch]["virt"], ram_size=128 << 20, rtc_offset=-86400)
    machine = Machine(config, io.BytesIO())
    [rtc] = [d for d in machine.devices if isinstance(d, kind)]
    if kind is Pl031:
        seconds = rtc.read(0, 4)
    else:
        low = rtc.read(TIME_LOW, 4)
        seconds = (rtc.read(TIME_HIGH, 4) << 32 | low) // 1_000_000_000
    assert abs(seconds - (time.time() - 86400)) < 5


def test_goldfish_time_set_and_alarm() -> None:
    rtc = GoldfishRtc(base=0x101000)
    host = NullHost()
    rtc.attach(host)
    target = 1_000_000_000 * 1_000_000_000  # 2001-09-09 in ns
    rtc.write(TIME_HIGH, 4, target >> 32)
    rtc.write(TIME_LOW, 4, target & 0xFFFF_FFFF)
    low = rtc.read(TIME_LOW, 4)
    now = rtc.read(TIME_HIGH, 4) << 32 | low
    assert 0 <= now - target < 1_000_000_000
    rtc.write(IRQ_ENABLED, 4, 1)
    rtc.write(ALARM_HIGH, 4, 0)
    rtc.write(ALARM_LOW, 4, 1)  # long past: fires at once
    assert host.irqs[11] is True
    rtc.write(CLEAR_INTERRUPT, 4, 1)
    assert host.irqs[11] is False
