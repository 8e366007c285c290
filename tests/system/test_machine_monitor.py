"""A real qemuser machine driven through its monitors: the qemu.qmp client (PyPI) over -qmp,
through every QMP command the machine answers and the events it sends, and HMP on mon:stdio
reached with Ctrl-A c."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.system.conftest import BIN, fixture

qmp = pytest.importorskip("qemu.qmp")

SPIN = bytes.fromhex("00000014")  # aarch64 `b .`: a guest that never stops by itself


def start(arch: str, *args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / f"qemuser-system-{arch}"), *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def connect(path: Path) -> qmp.QMPClient:
    client = qmp.QMPClient("test")
    for _ in range(200):  # the machine creates the socket while it starts
        if path.exists():
            break
        await asyncio.sleep(0.05)
    await client.connect(str(path))
    return client


async def next_event(listener: qmp.EventListener, name: str) -> dict:
    while True:
        event = await asyncio.wait_for(listener.get(), 60)
        if event["event"] == name:
            return event


def test_qmp_drives_a_machine_through_its_life(tmp_path: Path) -> None:
    sock, serial, pidfile = tmp_path / "qmp.sock", tmp_path / "serial", tmp_path / "pid"
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(1 << 20))
    proc = start("aarch64", "-M", "virt", "-S", "-no-shutdown", "-name", "guest1",
                 "-qmp", f"unix:{sock},server=on,wait=off", "-serial", f"file:{serial}",
                 "-pidfile", str(pidfile), "-drive", f"file={disk},if=none,id=d0,format=raw",
                 "-device", "virtio-blk-device,drive=d0", "-kernel",
                 str(fixture("hello-aarch64.elf")))  # fmt: skip

    async def drive() -> dict[str, object]:
        seen: dict[str, object] = {}
        client = await connect(sock)
        seen["status0"] = await client.execute("query-status")
        seen["name"] = await client.execute("query-name")
        seen["cpus"] = await client.execute("query-cpus-fast")
        seen["block"] = await client.execute("query-block")
        seen["machines"] = await client.execute("query-machines")
        seen["commands"] = await client.execute("query-commands")
        seen["version"] = await client.execute("query-version")
        seen["regs"] = await client.execute("human-monitor-command",
                                            {"command-line": "info registers"})  # fmt: skip
        seen["pid"] = pidfile.read_text()
        errors = []
        for name in ("query-hotpluggable-cpus", "nosuch"):
            try:
                await client.execute(name)
            except qmp.ExecuteError as exc:
                errors.append((exc.error.error.class_, exc.error.error.desc))
        with client.listener() as listener:
            await client.execute("cont")
            seen["resume"] = (await next_event(listener, "RESUME"))["event"]
            seen["shutdown"] = await next_event(listener, "SHUTDOWN")
            await next_event(listener, "STOP")
            seen["status1"] = await client.execute("query-status")
            try:
                await client.execute("cont")
            except qmp.ExecuteError as exc:
                errors.append((exc.error.error.class_, exc.error.error.desc))
            await client.execute("system_reset")
            seen["reset"] = await next_event(listener, "RESET")
            for _ in range(100):
                seen["status2"] = await client.execute("query-status")
                if seen["status2"]["status"] == "prelaunch":
                    break
                await asyncio.sleep(0.05)
            await client.execute("cont")
            await next_event(listener, "SHUTDOWN")  # the rebuilt machine ran the guest again
            await client.execute("system_powerdown")
            seen["powerdown"] = (await next_event(listener, "POWERDOWN"))["event"]
            await client.execute("quit")
            seen["quit"] = await next_event(listener, "SHUTDOWN")
        seen["errors"] = errors
        await client.disconnect()
        return seen

    try:
        seen = asyncio.run(drive())
        status = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert status == 0, proc.stderr.read()
    assert seen["status0"] == {"status": "prelaunch", "singlestep": False, "running": False}
    assert seen["name"] == {"name": "guest1"}
    [cpu] = seen["cpus"]
    assert (cpu["cpu-index"], cpu["target"], cpu["qom-path"]) == (
        0,
        "aarch64",
        "/machine/unattached/device[0]",
    )
    [block] = seen["block"]
    assert (block["device"], block["inserted"]["file"], block["inserted"]["drv"]) == (
        "d0",
        str(disk),
        "raw",
    )
    assert block["inserted"]["image"]["virtual-size"] == 1 << 20
    assert {"name": "virt-7.2", "alias": "virt"}.items() <= seen["machines"][0].items()
    assert {"name": "query-status"} in seen["commands"]
    assert seen["version"]["qemu"] == {"major": 7, "minor": 2, "micro": 0}
    assert " PC=0000000040080000 X00=" in seen["regs"]
    assert seen["pid"] == f"{proc.pid}\n"
    assert seen["resume"] == "RESUME"
    assert seen["shutdown"]["data"] == {"guest": True, "reason": "guest-shutdown"}
    assert seen["status1"]["status"] == "shutdown"
    assert seen["reset"]["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    assert seen["status2"]["status"] == "prelaunch"
    assert seen["powerdown"] == "POWERDOWN"
    assert seen["quit"]["data"] == {"guest": False, "reason": "host-qmp-quit"}
    assert seen["errors"] == [
        ("GenericError", "The feature 'query-hotpluggable-cpus' is not enabled"),
        ("CommandNotFound", "The command nosuch has not been found"),
        ("GenericError", "Resetting the Virtual Machine is required"),
    ]
    assert serial.read_text() == "hello from aarch64 virt\n" * 2
    assert not pidfile.exists()  # removed at exit, as QEMU 7.2 does
    for event in ("quit",):
        stamp = seen[event]["timestamp"]
        assert abs(stamp["seconds"] - time.time()) < 120


def test_stop_and_cont_a_running_guest_over_a_chardev_monitor(tmp_path: Path) -> None:
    sock, kernel = tmp_path / "qmp.sock", tmp_path / "spin.bin"
    kernel.write_bytes(SPIN)
    proc = start("aarch64", "-M", "virt", "-nodefaults", "-chardev",
                 f"socket,id=mon0,path={sock},server=on,wait=off", "-mon",
                 "chardev=mon0,mode=control", "-kernel", str(kernel))  # fmt: skip

    async def drive() -> list[object]:
        client = await connect(sock)
        seen: list[object] = [(await client.execute("query-status"))["status"]]
        with client.listener() as listener:
            await client.execute("stop")
            seen.append((await next_event(listener, "STOP"))["event"])
            seen.append((await client.execute("query-status"))["status"])
            pc = await client.execute("human-monitor-command", {"command-line": "info cpus"})
            seen.append(pc)
            await client.execute("cont")
            seen.append((await next_event(listener, "RESUME"))["event"])
            seen.append((await client.execute("query-status"))["status"])
            await client.execute("quit")
        await client.disconnect()
        return seen

    try:
        seen = asyncio.run(drive())
        status = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert status == 0
    assert seen[:3] == ["running", "STOP", "paused"]
    assert "* CPU #0: thread_id=" in str(seen[3])
    assert seen[4:] == ["RESUME", "running"]


def test_hmp_on_mon_stdio_through_ctrl_a_c() -> None:
    read_end, write_end = os.pipe()
    proc = start("aarch64", "-M", "virt", "-nographic", "-S", "-kernel",
                 str(fixture("hello-aarch64.elf")), stdin=read_end)  # fmt: skip
    os.close(read_end)
    try:
        for chunk in (b"\x01h", b"\x01c", b"info status\r", b"info registers\r", b"quit\r"):
            time.sleep(0.3)
            os.write(write_end, chunk)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(write_end)
        proc.kill()
    assert proc.returncode == 0, err
    text = out.decode()
    assert text.startswith("\n\rC-a h    print this help\n\r")
    assert "C-a c    switch between console and monitor\n\r" in text
    assert "QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) " in text
    assert "VM status: paused (prelaunch)" in text
    assert " PC=0000000040080000 X00=" in text
    assert "hello from aarch64 virt" not in text  # never continued
