"""A machine under management: the `MonitorTarget` that QMP and HMP drive (monitor/target.py).

The session owns the run state QEMU reports (prelaunch with -S, running, paused, shutdown with
-no-shutdown), turns monitor requests into actions between two slices of the run loop, and
emits QMP's events. Monitors call it from their own host threads: a request made there stops
the engine (`emu_stop`) and waits until the run loop has honoured it; a request from the run
loop's own thread (HMP on `mon:stdio`, read between slices) takes effect at once.

system_reset rebuilds the machine from its configuration (fresh devices, images reloaded),
since unicorn has no CPU reset: what survives is what QEMU keeps on disk (flash and disk images).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import capstone
from unicorn import UcError

from qemuser.system.debuglog import disassembly
from qemuser.system.devices.gpio.pl061 import POWER_LINE, Pl061
from qemuser.system.machine import Machine
from qemuser.system.monitor.regs import register_dump
from qemuser.system.monitor.target import BlockInfo, CpuInfo, EventBus, MachineInfo
from qemuser.system.net.clients import NetClients
from qemuser.system.snapshot import SnapshotError, VmSnapshots

RESET_STATUS = -1  # Machine.exit_status while a reset rebuilds it
_STOPPED = ("prelaunch", "paused", "shutdown")
_WAIT_S = 0.05  # how often a stopped machine looks at its console input


class MachineSession:
    """The run state and monitor requests of one machine (rebuilt by system_reset)."""

    def __init__(
        self,
        build: Callable[[], Machine],
        *,
        name: str | None = None,
        start_paused: bool = False,
        no_shutdown: bool = False,
        blocks: Callable[[], list[BlockInfo]] = list,
        chardevs: Callable[[], list[tuple[str, str]]] = list,
        machines: Callable[[], list[MachineInfo]] = list,
        snapshots: VmSnapshots | None = None,
        network: NetClients | None = None,
    ) -> None:
        self.snapshots = snapshots  # savevm/loadvm over the machine's disks (system/snapshot.py)
        self.network = network  # info network, hostfwd_add, netdev_add (system/net/clients.py)
        self.events = EventBus()
        self._build = build
        self._name = name
        self._state = "prelaunch" if start_paused else "running"
        self.no_shutdown = no_shutdown
        self._blocks, self._chardevs, self._machines = blocks, chardevs, machines
        self._cond = threading.Condition()
        self._pause_requested = False
        self._reset_requested = False
        self._run_thread: int | None = None
        self._native_tid = threading.get_native_id()
        self.machine = self._adopt(build())

    def _adopt(self, machine: Machine) -> Machine:
        machine.checkpoint = self._checkpoint
        machine.on_guest_stop = self._guest_stop
        return machine

    # --- the run loop's side ----------------------------------------------------------------
    def run(self) -> int:
        """Run the machine (and its rebuilds) until it ends; the exit status."""
        self._run_thread = threading.get_ident()
        self._native_tid = threading.get_native_id()
        while True:
            status = self.machine.run()
            if status != RESET_STATUS:
                return status
            self.machine = self._adopt(self._build())
            with self._cond:
                if self._state != "running":
                    self._state = "prelaunch"  # QEMU: a stopped machine waits for cont
                self._cond.notify_all()

    def _checkpoint(self, machine: Machine) -> None:
        """Between two slices: honour pause/reset requests; wait while stopped."""
        with self._cond:
            if self._pause_requested:
                self._pause_requested = False
                if self._state == "running":
                    self._state = "paused"
                    self.events.emit("STOP")
                self._cond.notify_all()
        while True:
            with self._cond:
                if self._reset_requested:
                    self._reset_requested = False
                    machine.exit_status = RESET_STATUS
                    return
                if self._state not in _STOPPED or machine.exit_status is not None:
                    return
            # Stopped: a monitor on the console (mon:stdio) still needs its input.
            if machine.console_input is not None:
                machine.console_input.wait(int(_WAIT_S * 1e9))
                machine.poll_console_input()
            else:
                with self._cond:
                    self._cond.wait(_WAIT_S)

    def _guest_stop(self, reason: str) -> bool:
        """The guest powered off or reset: SHUTDOWN; with -no-shutdown it stays, stopped."""
        self.events.emit("SHUTDOWN", {"guest": True, "reason": reason})
        if not self.no_shutdown:
            return False
        with self._cond:
            self._state = "shutdown"
            self.events.emit("STOP")
            self._cond.notify_all()
        return True

    def _on_run_thread(self) -> bool:
        return threading.get_ident() == self._run_thread

    # --- MonitorTarget ----------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self._name

    @property
    def run_state(self) -> str:
        return self._state

    def pause(self) -> None:
        with self._cond:
            if self._state != "running":
                return
            if self._on_run_thread() or self._run_thread is None:
                self._state = "paused"
                self.events.emit("STOP")
                return
            self._pause_requested = True
        self.machine.uc.emu_stop()
        with self._cond:
            self._cond.wait_for(lambda: not self._pause_requested, timeout=5)

    def resume(self) -> None:
        with self._cond:
            if self._state not in ("prelaunch", "paused"):
                return
            self._state = "running"
            self.events.emit("RESUME")
            self._cond.notify_all()

    def reset(self, reason: str) -> None:
        self.events.emit("RESET", {"guest": False, "reason": reason})
        with self._cond:
            self._reset_requested = True
            if self._state == "shutdown":
                self._state = "paused"
            self._cond.notify_all()
        self.machine.uc.emu_stop()

    def powerdown(self) -> None:
        """QEMU's virt presses its power button: arm's gpio-keys line on the PL061, held for
        100 ms (hw/gpio/gpio_key.c); riscv's virt has none, so there only the event."""
        self.events.emit("POWERDOWN")
        machine = self.machine
        button = next((d for d in machine.devices if isinstance(d, Pl061)), None)
        if button is None:
            return
        machine.post_io(lambda: button.set_input(POWER_LINE, True))
        release = threading.Timer(
            0.1, lambda: machine.post_io(lambda: button.set_input(POWER_LINE, False))
        )
        release.daemon = True
        release.start()

    def quit(self, reason: str) -> None:
        self.events.emit("SHUTDOWN", {"guest": False, "reason": reason})
        with self._cond:
            self.machine.stop(0)
            self._cond.notify_all()

    def cpus(self) -> list[CpuInfo]:
        machine = self.machine
        spec = machine.config.board.cpu
        model = spec.model(machine.config.cpu_model).name
        qom = f"{model}-arm-cpu" if spec.name == "aarch64" else f"{model}-riscv-cpu"
        return [
            CpuInfo(
                index=index,
                thread_id=self._native_tid,
                target=spec.name,
                qom_type=qom,
                pc=machine.engines[index].reg_read(spec.pc),  # each vCPU has its engine
                halted=vcpu.in_wfi(),
            )
            for index, vcpu in enumerate(machine.cpus)
        ]

    def blocks(self) -> list[BlockInfo]:
        return self._blocks()

    def register_dump(self, cpu_index: int) -> str:
        engines = self.machine.engines
        engine = engines[cpu_index] if 0 <= cpu_index < len(engines) else self.machine.uc
        return register_dump(engine, self.machine.config.board.cpu.name)

    def read_memory(self, addr: int, size: int, physical: bool, cpu_index: int) -> bytes:
        # unicorn reads guest-physical memory only; with the MMU off (firmware, bare metal)
        # virtual and physical addresses agree.
        return bytes(self.machine.uc.mem_read(addr, size))

    def memory_tree(self) -> str:
        machine = self.machine
        board = machine.config.board
        lines = [
            "address-space: memory",
            "  0000000000000000-ffffffffffffffff (prio 0, i/o): system",
        ]
        regions = [(board.ram_base, machine.config.ram_size, "ram", "mach-virt.ram")]
        for device in machine.devices:
            for base, size, *_ in device.windows():
                regions.append((base, size, "i/o", device.kind))
        for base, size, kind, label in sorted(regions):
            lines.append(f"    {base:016x}-{base + size - 1:016x} (prio 0, {kind}): {label}")
        return "\n".join(lines) + "\n\n"

    def device_tree(self) -> str:
        lines = ["bus: main-system-bus", "  type System"]
        for device in self.machine.devices:
            lines.append(f'  dev: {device.kind}, id ""')
            for base, size, *_ in device.windows():
                lines.append(f"    mmio {base:016x}/{size:016x}")
        return "\n".join(lines) + "\n"

    def chardevs(self) -> list[tuple[str, str]]:
        return self._chardevs()

    def disassemble(self, addr: int, count: int, cpu_index: int) -> list[str]:
        spec = self.machine.config.board.cpu
        cs = capstone.Cs(*spec.capstone)
        try:
            code = bytes(self.machine.uc.mem_read(addr, count * 4))
        except UcError:  # nothing mapped there
            return []
        return disassembly(cs, code, addr)[:count]

    def machines(self) -> list[MachineInfo]:
        return self._machines()

    # --- snapshots (system/snapshot.py) -----------------------------------------------------
    def _while_stopped(self, action: Callable[[Machine], None]) -> None:
        """Run `action` with the machine held between two slices, as QEMU's savevm/loadvm stop
        the VM (STOP, then RESUME if it ran)."""
        if self.snapshots is None:
            raise SnapshotError("no block device can store vmstate for snapshot")
        was_running = self._state == "running"
        self.pause()
        try:
            action(self.machine)
        finally:
            if was_running:
                self.resume()

    def savevm(self, name: str | None) -> None:
        snapshots = self.snapshots
        self._while_stopped(lambda machine: snapshots.save(machine, name))  # type: ignore[union-attr]

    def loadvm(self, name: str) -> None:
        snapshots = self.snapshots
        self._while_stopped(lambda machine: snapshots.load(machine, name))  # type: ignore[union-attr]

    def delvm(self, name: str) -> None:
        if self.snapshots is not None:
            self.snapshots.delete(name)

    def snapshot_info(self) -> str:
        if self.snapshots is None:
            return "no block device can store vmstate for snapshot\n"
        return self.snapshots.info()
