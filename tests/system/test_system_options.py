"""QEMU's machine and option syntax on the system command line, each message checked against
Debian's QEMU 7.2 run with the same options (our program name in front). Cases QEMU accepts
but qemuser cannot model are refused in one line instead of being ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qemuser.system.dtb import parse_dtb
from tests.system.conftest import fixture, run_system

HELLO = "hello-aarch64.elf"


def one_line_error(arch: str, *args: str) -> str:
    result = run_system(arch, *args, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    prefix = f"qemuser-system-{arch}: "
    assert lines[0].startswith(prefix)
    return lines[0][len(prefix) :]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "garbage.dtb").write_bytes(b"garbage\n")
    (tmp_path / "big.bin").write_bytes(bytes(64 * 1024 * 1024 + 1))
    (tmp_path / "disk.raw").write_bytes(bytes(1 << 20))
    os.mkfifo(tmp_path / "fifo")
    names = ("empty.bin", "garbage.dtb", "big.bin", "disk.raw", "fifo")
    return {name.split(".")[0]: str(tmp_path / name) for name in names}


# (arguments with {name} for files, the message QEMU 7.2 prints after its program name)
AARCH64_CASES = [
    (["-accel", "kvm"], "-accel kvm: invalid accelerator kvm"),
    (["-accel", "bogus"], "-accel bogus: invalid accelerator bogus"),
    (["-M", "virt,foo=bar"], "Property 'virt-7.2-machine.foo' not found"),
    (["-M", "virt", "-M", "foo=bar"], "Property 'virt-7.2-machine.foo' not found"),
    (["-cpu", "cortex-a72,foo=on"],
     "can't apply global cortex-a72-arm-cpu.foo=on: Property 'cortex-a72-arm-cpu.foo' not found"),
    (["-M", "virt,gic-version=host"], "gic-version=host requires KVM"),
    (["-M", "virt,secure=on"],
     "mach-virt: qemuser does not support providing Security extensions to the guest CPU"),
    (["-kernel", "{fifo}"], "could not load kernel '{fifo}'"),
    (["-kernel", "/tmp"], "could not load kernel '/tmp'"),
    (["-kernel", "{empty}"], "could not load kernel '{empty}': empty file"),
    (["-bios", "/tmp"], "Could not load ROM image '/tmp'"),
    (["-bios", "/nonexistent"], "Could not find ROM image '/nonexistent'"),
    (["-bios", "{big}"], "Could not load ROM image '{big}'"),
    (["-bios", "{empty}"], "Could not load ROM image '{empty}': empty file"),
    (["-serial", "chardev:nope"],
     "-serial chardev:nope: could not connect serial device to character backend "
     "'chardev:nope'"),
    (["-mon", "chardev=nope"], '-mon chardev=nope: chardev "nope" not found'),
    (["-monitor", "chardev:nope"], '-monitor chardev:nope: chardev "nope" not found'),
    (["-qmp", "chardev:nope"], '-qmp chardev:nope: chardev "nope" not found'),
    (["-chardev", "null,id=x", "-chardev", "null,id=x"],
     "-chardev null,id=x: Duplicate ID 'x' for chardev"),
    (["-rtc", "clock=bogus"], "invalid option value 'bogus'"),
    (["-boot", "bogus"], "Invalid boot device 'u'"),
    (["-blockdev", "driver=file,node-name=a,filename={disk},bogus=1"],
     "-blockdev driver=file,node-name=a,filename={disk},bogus=1: Parameter 'bogus' is "
     "unexpected"),
    (["-blockdev", "driver=file,node-name=a,filename=/dev/null"],
     "-blockdev driver=file,node-name=a,filename=/dev/null: 'file' driver requires "
     "'/dev/null' to be a regular file"),
    (["-blockdev", "driver=host_device,node-name=a,filename={disk}"],
     "-blockdev driver=host_device,node-name=a,filename={disk}: 'host_device' driver "
     "requires '{disk}' to be either a character or block device"),
    (["-blockdev", "driver=raw,node-name=a,file.driver=file,file.filename={disk},readonly=on"],
     "-blockdev driver=raw,node-name=a,file.driver=file,file.filename={disk},readonly=on: "
     "Parameter 'readonly' is unexpected"),
    (["-blockdev", "driver=qcow2,node-name=a,file.driver=file,file.filename={disk}"],
     "-blockdev driver=qcow2,node-name=a,file.driver=file,file.filename={disk}: "
     "Image is not in qcow2 format"),
    (["-M", "virt,pflash0=nope"], "Property 'cfi.pflash01.drive' can't find value 'nope'"),
    (["-drive", "file={disk},if=pflash,format=raw"],
     "device requires 67108864 bytes, block backend provides 1048576 bytes"),
    (["-drive", "file={disk},if=pflash,format=raw,index=2"],
     "-drive file={disk},if=pflash,format=raw,index=2: machine type does not support "
     "if=pflash,bus=0,unit=2"),
    (["-device", "virtio-rng-device,bootindex=1"],
     "-device virtio-rng-device,bootindex=1: Property 'virtio-rng-device.bootindex' not found"),
    (["-device", "virtio-rng-device,id=r", "-device", "virtio-rng-device,id=r"],
     "-device virtio-rng-device,id=r: Duplicate ID 'r' for device"),
    (["-D", "/nonexistent/log"],
     "Error opening logfile /nonexistent/log: No such file or directory"),
    (["-pidfile", "/nonexistent/pid"],
     "cannot create PID file: Could not create '/nonexistent/pid': No such file or directory"),
    (["-serial", "stdio", "-daemonize"], "-serial stdio: cannot use stdio with -daemonize"),
    (["-nographic", "-daemonize"], "-nographic cannot be used with -daemonize"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), AARCH64_CASES)
def test_aarch64_refusals_in_qemus_words(
    args: list[str], message: str, files: dict[str, str]
) -> None:
    args = [arg.format(**files) for arg in args]
    if "-kernel" not in args and "-bios" not in args:
        args += ["-kernel", str(fixture(HELLO))]
    assert one_line_error("aarch64", "-M", "virt", *args) == message.format(**files)


def test_append_and_initrd_need_a_kernel() -> None:
    assert one_line_error("aarch64", "-M", "virt", "-append", "x") == (
        "-append only allowed with -kernel option"
    )
    assert one_line_error("riscv64", "-M", "virt", "-initrd", "/etc/hostname") == (
        "-initrd only allowed with -kernel option"
    )


def test_kernels_of_another_architecture_are_not_run() -> None:
    message = one_line_error("aarch64", "-M", "virt", "-kernel", str(fixture("hello-riscv64.elf")))
    assert message.endswith("': ELF for EM_RISCV, not EM_AARCH64")
    assert one_line_error("riscv64", "-M", "virt", "-kernel", "/bin/true").endswith(
        "': ELF for EM_X86_64, not EM_RISCV"
    )


def test_riscv_refusals(files: dict[str, str]) -> None:
    hello = str(fixture("hello-riscv64.elf"))
    assert one_line_error("riscv64", "-M", "virt,foo=bar", "-kernel", hello) == (
        "Property 'virt-machine.foo' not found"
    )
    assert one_line_error("riscv64", "-M", "virt", "-cpu", "rv64,foo=on", "-kernel", hello) == (
        "can't apply global rv64-riscv-cpu.foo=on: Property 'rv64-riscv-cpu.foo' not found"
    )
    assert one_line_error("riscv64", "-M", "virt", "-bios", "/tmp") == (
        "could not load firmware '/tmp'"
    )
    assert one_line_error("riscv64", "-M", "virt", "-accel", "kvm") == (
        "-accel kvm: invalid accelerator kvm"
    )


def test_unmodelled_options_are_refused_not_ignored() -> None:
    hello = str(fixture(HELLO))
    for args, message in (
        (["-semihosting-config", "target=gdb"], "-semihosting-config target=gdb: semihosting "
         "through GDB (target=gdb) is not supported by qemuser"),
        (["-d", "mmu"], "-d mmu: system-mode logging of 'mmu' is not supported"),
        (["-M", "virt,acpi=on"], "virt-7.2-machine: ACPI tables are not provided by qemuser"),
        (["-M", "virt,mte=on"],
         "mach-virt: qemuser does not support providing MTE to the guest CPU"),
    ):  # fmt: skip
        assert one_line_error("aarch64", "-M", "virt", *args, "-kernel", hello) == message


def test_garbage_dtb_is_refused(files: dict[str, str]) -> None:
    hello = str(fixture(HELLO))
    assert one_line_error("aarch64", "-M", "virt", "-kernel", hello, "-dtb",
                          files["garbage"]) == (
        f"Couldn't open dtb file {files['garbage']}: FDT_ERR_BADMAGIC"
    )  # fmt: skip


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_machine_syntax_aliases_and_accepted_properties(arch: str) -> None:
    hello = str(fixture(f"hello-{arch}.elf"))
    machine = "type=virt-7.2,highmem=on,gic-version=2" if arch == "aarch64" else "type=virt"
    result = run_system(arch, "-machine", machine, "-M", "accel=tcg", "-accel", "tcg,thread=single",
                        "-rtc", "base=utc,clock=host", "-boot", "order=c", "-name", "guest1",
                        "-nodefaults", "-serial", "stdio", "-kernel", hello)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"hello from {arch} virt\n"


def test_version_help_and_machine_list() -> None:
    version = run_system("aarch64", "-version")
    assert version.returncode == 0
    assert version.stdout.splitlines() == [
        "QEMU emulator version 7.2.0 (qemuser)",
        "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers",
    ]
    usage = run_system("riscv64", "-h")
    assert usage.returncode == 0
    assert "usage: qemuser-system-riscv64 [options]" in usage.stdout
    assert "-no-shutdown    stop before shutdown" in usage.stdout
    machines = run_system("aarch64", "-M", "help").stdout.splitlines()
    assert machines[1:3] == [
        "virt                 QEMU 7.2 ARM Virtual Machine (alias of virt-7.2)",
        "virt-7.2             QEMU 7.2 ARM Virtual Machine",
    ]
    logs = run_system("aarch64", "-d", "help")
    assert logs.stdout.splitlines()[0] == "Log items (comma separated):"
    assert "guest_errors    log when the guest OS does something invalid (eg accessing a" in (
        logs.stdout
    )


def test_dumpdtb_and_dtb_with_chosen_filled(tmp_path: Path) -> None:
    dumped = tmp_path / "virt.dtb"
    result = run_system("aarch64", "-M", f"virt,dumpdtb={dumped}")
    assert result.returncode == 0
    assert result.stderr == f"qemuser-system-aarch64: info: dtb dumped to {dumped}. Exiting.\n"
    tree = parse_dtb(dumped.read_bytes())
    assert tree.find("pl011@9000000") is not None
    assert tree.find("flash@4000000").props["bank-width"] == b"\0\0\0\x04"
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"\x07" * 4096)
    filled = tmp_path / "filled.dtb"
    result = run_system("aarch64", "-M", f"virt,dumpdtb={filled}", "-dtb", str(dumped),
                        "-kernel", str(fixture(HELLO)), "-append", "console=ttyAMA0 quiet",
                        "-initrd", str(initrd))  # fmt: skip
    assert result.returncode == 0, result.stderr
    chosen = parse_dtb(filled.read_bytes()).find("chosen")
    assert chosen is not None
    assert chosen.props["bootargs"] == b"console=ttyAMA0 quiet\0"
    start = int.from_bytes(chosen.props["linux,initrd-start"], "big")
    end = int.from_bytes(chosen.props["linux,initrd-end"], "big")
    assert end - start == 4096 and start >= 0x4000_0000


def test_two_serials_keep_the_first_and_create_the_second(tmp_path: Path) -> None:
    first, second = tmp_path / "s0", tmp_path / "s1"
    result = run_system("aarch64", "-M", "virt", "-serial", f"file:{first}", "-serial",
                        f"file:{second}", "-kernel", str(fixture(HELLO)))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert first.read_text() == "hello from aarch64 virt\n"
    assert second.exists() and second.read_text() == ""


def test_serial_on_a_chardev_and_nodefaults(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_system("riscv64", "-M", "virt", "-nodefaults", "-chardev",
                        f"file,id=log,path={out}", "-serial", "chardev:log", "-kernel",
                        str(fixture("hello-riscv64.elf")))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert out.read_text() == "hello from riscv64 virt\n"
    quiet = run_system("riscv64", "-M", "virt", "-nodefaults", "-kernel",
                       str(fixture("hello-riscv64.elf")))  # fmt: skip
    assert quiet.returncode == 0 and quiet.stdout == ""  # no default serial


def test_qcow2_without_format_is_probed_not_written_as_raw(tmp_path: Path) -> None:
    import subprocess

    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    before = image.read_bytes()[:512]
    result = run_system("aarch64", "-M", "virt", "-drive", f"file={image},if=none,id=d0",
                        "-device", "virtio-blk-device,drive=d0,id=disk0,bootindex=1",
                        "-kernel", str(fixture(HELLO)))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "probing guessed raw" not in result.stderr
    assert image.read_bytes()[:512] == before


def test_debug_log_items_for_system_mode(tmp_path: Path) -> None:
    log = tmp_path / "qemu.log"
    result = run_system("aarch64", "-M", "virt", "-d", "in_asm,int,guest_errors,unimp", "-D",
                        str(log), "-kernel", str(fixture("traps-aarch64.elf")))  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = log.read_text()
    assert text.startswith("----------------\nIN: \n0x40080000:  ")
    assert "Taking exception 2 [SVC] on CPU 0\n" in text
    assert "Taking exception 1 [Undefined Instruction] on CPU 0\n" in text
    assert "Taking exception 11 [Hypervisor Call] on CPU 0\n" in text  # PSCI SYSTEM_OFF
    assert "  svc      #0x42\n" in text
    assert one_line_error("aarch64", "-M", "virt", "-d", "bogus", "-kernel", str(
        fixture(HELLO))) == "-d bogus: unknown log item (use '-d help' for a list)"  # fmt: skip


def test_machine_property_help_is_qemus() -> None:
    result = run_system("aarch64", "-M", "virt,help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "virt-7.2-machine options:",
        "  acpi=<OnOffAuto>       - Enable ACPI",
        "  append=<string>        - Linux kernel command line",
    ]
    secure = "  secure=<bool>          - Set on/off to enable/disable the ARM Security Extensions"
    assert f"{secure} (TrustZone)" in lines


def test_a_block_device_reports_its_real_size(tmp_path: Path) -> None:
    import subprocess

    from qemuser.cli.system_devices import parse_blockdev

    image = tmp_path / "loop.img"
    image.write_bytes(bytes(3 << 20))
    setup = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True,
                           text=True)  # fmt: skip
    if setup.returncode != 0:
        pytest.skip(f"no loop device here: {setup.stderr.strip()}")
    device = setup.stdout.strip()
    try:
        node = parse_blockdev(f"driver=host_device,node-name=hd,filename={device}", {})
        assert node.backend is not None and node.backend.size == 3 << 20
        node.backend.close()
        raw = parse_blockdev(
            f"driver=raw,node-name=r,file.driver=host_device,file.filename={device},read-only=on",
            {},
        )
        assert raw.backend is not None and raw.backend.size == 3 << 20
        assert raw.backend.read_only
        raw.backend.close()
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
