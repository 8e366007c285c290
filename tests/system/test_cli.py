"""The command line: help listings and errors as one line with a non-zero status."""

from __future__ import annotations

import pytest

from tests.system.conftest import fixture, run_system


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_machine_help_lists_virt(arch: str) -> None:
    result = run_system(arch, "-M", "help")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "Supported machines are:"
    assert any(line.startswith("virt ") for line in result.stdout.splitlines())


def test_cpu_and_device_help() -> None:
    cpus = run_system("aarch64", "-cpu", "help")
    assert cpus.returncode == 0 and "cortex-a57" in cpus.stdout
    devices = run_system("riscv64", "-device", "help")
    assert devices.returncode == 0 and 'name "ns16550a"' in devices.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-M", "nosuch", "-kernel", "x"], "unsupported machine type 'nosuch'"),
        (["-M", "virt", "-kernel", "/nonexistent/Image"], "could not load kernel"),
        (["-M", "virt", "-cpu", "nosuch"], "unable to find CPU model 'nosuch'"),
        (["-M", "virt", "-m", "lots"], "invalid RAM size"),
        (["-M", "virt", "-device", "pl011"], "cannot be added to machine 'virt'"),
        (["-M", "virt", "-device", "frobnicator"], "is not a valid device model name"),
        (["-M", "virt", "-smp", "9"], "exceeds max CPUs supported by machine 'mach-virt' (8)"),
        (["-frob"], "-frob: invalid option"),
    ],
)
def test_errors_are_one_line(args: list[str], message: str) -> None:
    if "-cpu" in args:
        args = [*args, "-kernel", str(fixture("hello-aarch64.elf"))]
    result = run_system("aarch64", *args)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qemuser-system-aarch64: ")
    assert message in lines[0]
