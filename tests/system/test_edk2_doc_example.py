"""QEMU's documentation example for the aarch64 virt board (issue 14's command line, issue 15's
SSH through its port forward), with local files substituted: Debian's EDK2 (AAVMF code and
variables, padded to the 64 MiB of QEMU's flash banks) in pflash0/pflash1, and a raw disk on
virtio-scsi (scsi-hd) holding a GPT with an EFI system partition (tests/system/esp.py) that has
Debian's GRUB as \\EFI\\BOOT\\BOOTAA64.EFI, Debian's arm64 kernel (an EFI-stub Image) and a busybox
initramfs. The guest boots EDK2 -> GRUB -> Linux -> /init, which prints what it sees and powers off.

GRUB rather than a startup.nsh: EDK2's boot manager starts the shell (and with it startup.nsh)
only after every other boot option has failed, and the doc line has a NIC, so first come PXE and
HTTP boot over IPv4 and IPv6; under qemuser each waits about a minute for its DHCP offer (measured:
shell reached after 275 s, against GRUB started after 20 s). A disk with \\EFI\\BOOT\\BOOTAA64.EFI
is the first boot option, so GRUB runs before any network boot is tried.

The disk goes through QEMU's `host_device` protocol on a loop device (`losetup -f --show`,
detached in a `finally`), as in the doc line; when loop devices cannot be used (not root, none
free) the tests fall back to `file.driver=file` on the image itself, which QEMU reads the same way.
"""

from __future__ import annotations

import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.system.debian import arm64_kernel
from tests.system.esp import grub_esp, loop_device
from tests.system.initramfs import Entry, arm64_modules, busybox_arm64, initramfs_with_modules
from tests.system.interactive import ConsoleSession
from tests.system.netguest import UDHCPC_SCRIPT, free_port
from tests.system.sshguest import (
    DROPBEAR_START,
    account_entries,
    dropbear_entries,
    new_key,
    ssh_until_up,
    virtio_net_modules,
)

AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
FLASH_SIZE = 64 << 20  # each of the virt board's two flash banks

# QEMU's documentation example (docs/system/arm/virt.rst's UEFI line, as issue 14 quotes it).
DOC_EXAMPLE = r"""
qemu-system-aarch64 -machine type=virt,virtualization=on,pflash0=rom,pflash1=efivars -m 4096 \
  -cpu max -smp 4 -accel tcg \
  -device virtio-net-pci,netdev=unet -device virtio-scsi-pci -device scsi-hd,drive=hd \
  -netdev user,id=unet,hostfwd=tcp::2222-:22 \
  -blockdev driver=raw,node-name=hd,file.driver=host_device,file.filename=/dev/… \
  -serial mon:stdio -display none \
  -blockdev node-name=rom,driver=file,filename=…/edk2-aarch64-code.fd,read-only=true \
  -blockdev node-name=efivars,driver=file,filename=…/qemu-arm64-efivars
"""
KERNEL_ARGS = "console=ttyAMA0 panic=-1 quiet"
# /init's report: the CPUs Linux brought up and has, the exception level they started at, whether
# it was started by UEFI (the EFI stub leaves /sys/firmware/efi), and the command line GRUB gave
# it (GRUB prepends BOOT_IMAGE).
REPORT = """/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
efi=no; [ -d /sys/firmware/efi ] && efi=yes
echo "doc-example: online=$(nproc) present=$(ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l)"
echo "doc-example: $(dmesg | grep -o 'All CPU(s) started at EL[0-9]')"
echo "doc-example: efi=$efi cmdline=$(cat /proc/cmdline)"
"""

needs_edk2 = pytest.mark.skipif(not AAVMF_CODE.exists(), reason="qemu-efi-aarch64 not installed")


def doc_command(smp: int, disk: str, disk_protocol: str, code: Path, variables: Path,
                port: int) -> list[str]:  # fmt: skip
    """The doc example's arguments with local files, `smp` CPUs and host port `port`."""
    line = DOC_EXAMPLE.replace("\\\n", " ")
    line = line.replace("-smp 4", f"-smp {smp}").replace("tcp::2222-:22", f"tcp::{port}-:22")
    line = line.replace("file.driver=host_device,file.filename=/dev/…",
                        f"file.driver={disk_protocol},file.filename={disk}")  # fmt: skip
    line = line.replace("…/edk2-aarch64-code.fd", str(code))
    line = line.replace("…/qemu-arm64-efivars", str(variables))
    args = shlex.split(line)
    assert args[0] == "qemu-system-aarch64" and "…" not in line
    return args[1:]


def firmware(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of EDK2's code and variable store, padded to the flash banks' size (QEMU refuses
    a pflash image of another size), fresh for each test: EDK2 writes its boot options there."""
    padded = []
    for source in (AAVMF_CODE, AAVMF_VARS):
        copy = tmp_path / source.name
        shutil.copyfile(source, copy)
        with open(copy, "r+b") as image:
            image.truncate(FLASH_SIZE)
        padded.append(copy)
    return padded[0], padded[1]


def boot_disk(tmp_path: Path, init: str, modules: tuple[str, ...] = (),
              extra: tuple[Entry, ...] = ()) -> Path:  # fmt: skip
    """tmp_path/disk.img: the ESP with GRUB, the kernel and an initramfs running `init`."""
    kernel = arm64_kernel()
    initrd = tmp_path / "initrd.cpio"
    initramfs_with_modules(initrd, "#!/bin/busybox sh\n" + init,
                           arm64_modules(kernel, modules), busybox_arm64(), extra)  # fmt: skip
    disk = tmp_path / "disk.img"
    grub_esp(disk, kernel, initrd, KERNEL_ARGS)
    return disk


def start(tmp_path: Path, disk: Path, device: Path | None, smp: int, port: int) -> ConsoleSession:
    code, variables = firmware(tmp_path)
    where, protocol = (str(device), "host_device") if device else (str(disk), "file")
    args = doc_command(smp, where, protocol, code, variables, port)
    return ConsoleSession("aarch64", *args)


def through_edk2_and_grub(session: ConsoleSession) -> None:
    """The boot path up to the kernel: EDK2's boot manager picks the SCSI disk first and runs
    GRUB from its ESP. (The EFI stub says nothing more: it keeps quiet with `quiet`; that GRUB
    started Linux through it shows in /init's report.)"""
    session.expect('BdsDxe: starting Boot0001 "UEFI QEMU QEMU HARDDISK " from '
                   "PciRoot(0x0)/Pci(0x2,0x0)/Scsi(0x0,0x0)", timeout=300)  # fmt: skip
    session.expect("Welcome to GRUB!", timeout=60)


def lines(session: ConsoleSession) -> list[str]:
    return [re.sub(r"\x1b\[[0-9;=]*[A-Za-z]", "", line).rstrip("\r")
            for line in session.text().splitlines()]  # fmt: skip


@pytest.mark.slow
@needs_edk2
@pytest.mark.parametrize("smp", [1, 4])
def test_doc_example_boots_linux_through_edk2_and_grub(tmp_path: Path, smp: int) -> None:
    disk = boot_disk(tmp_path, REPORT + "poweroff -f\n")
    with loop_device(disk) as device:
        session = start(tmp_path, disk, device, smp, free_port())
        try:
            through_edk2_and_grub(session)
            session.expect("doc-example: efi=", timeout=400)
            status = session.wait(120)
        finally:
            session.close()
    seen = lines(session)
    assert f"doc-example: online={smp} present={smp}" in seen, session.text()[-3000:]
    assert "doc-example: All CPU(s) started at EL2" in seen
    assert f"doc-example: efi=yes cmdline=BOOT_IMAGE=/vmlinuz {KERNEL_ARGS}" in seen
    assert status == 0


@pytest.mark.slow
@needs_edk2
def test_ssh_into_the_doc_example_through_its_hostfwd(tmp_path: Path) -> None:
    key, public = new_key(tmp_path)
    init = (REPORT + "mkdir -p /var/run /etc/dropbear /dev/pts\nmount -t devpts devpts /dev/pts\n"
            "{insmods}\nip link set lo up\nip link set eth0 up\n"
            "udhcpc -i eth0 -s /udhcpc.sh -q -n -t 10 -T 1\n" + DROPBEAR_START
            + "poweroff -f\n")  # fmt: skip
    extra = (
        Entry("udhcpc.sh", stat.S_IFREG | 0o755, UDHCPC_SCRIPT.encode()),
        *account_entries(public),
        *dropbear_entries(),
    )
    disk = boot_disk(tmp_path, init, virtio_net_modules("virtio-net-pci"), extra)
    port = free_port()
    with loop_device(disk) as device:
        session = start(tmp_path, disk, device, 4, port)
        try:
            through_edk2_and_grub(session)
            session.expect("sshd up", timeout=400)
            result = ssh_until_up(key, port, "uname -m; touch /tmp/poweroff", session.proc)
            try:
                status: int | None = session.wait(180)
            except subprocess.TimeoutExpired:
                status = None  # still running: the asserts below say what went wrong
        finally:
            session.close()
    assert result is not None and result.returncode == 0, (result, session.text()[-3000:])
    assert result.stdout == "aarch64\n"
    assert "lease: 10.0.2.15 router 10.0.2.2 dns 10.0.2.3" in lines(session)
    assert status == 0


def test_doc_example_substitutes_only_local_files() -> None:
    """The command line the boot tests run is the doc example's, token for token, apart from
    the local file names, the CPU count and the host port."""
    args = doc_command(4, "/dev/loop7", "host_device", Path("/c.fd"), Path("/v.fd"), 2222)
    expected = shlex.split(DOC_EXAMPLE.replace("\\\n", " "))[1:]
    differ = [(want, got) for want, got in zip(expected, args, strict=True) if want != got]
    assert differ == [
        ("driver=raw,node-name=hd,file.driver=host_device,file.filename=/dev/…",
         "driver=raw,node-name=hd,file.driver=host_device,file.filename=/dev/loop7"),
        ("node-name=rom,driver=file,filename=…/edk2-aarch64-code.fd,read-only=true",
         "node-name=rom,driver=file,filename=/c.fd,read-only=true"),
        ("node-name=efivars,driver=file,filename=…/qemu-arm64-efivars",
         "node-name=efivars,driver=file,filename=/v.fd"),
    ]  # fmt: skip


def test_esp_image_is_a_gpt_disk_with_grub_and_the_kernel(tmp_path: Path) -> None:
    from tests.system.esp import ESP_TYPE, esp_listing

    kernel, initrd = tmp_path / "k", tmp_path / "i"
    kernel.write_bytes(b"MZ kernel")
    initrd.write_bytes(b"070701 initrd")
    disk = tmp_path / "disk.img"
    offset = grub_esp(disk, kernel, initrd, "console=ttyAMA0")
    table = subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    assert '"label": "gpt"' in table and f'"type": "{ESP_TYPE}"' in table
    assert offset == 1 << 20
    assert esp_listing(disk, offset) == ["EFI", "initrd", "vmlinuz"]
    assert esp_listing(disk, offset, "EFI/BOOT") == ["BOOTAA64.EFI"]
    config = subprocess.run(["mtype", "-i", f"{disk}@@{offset}", "::EFI/debian/grub.cfg"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert config == "linux /vmlinuz console=ttyAMA0\ninitrd /initrd\nboot\n"
    verify = subprocess.run(["sfdisk", "-V", str(disk)], capture_output=True, text=True)
    assert verify.returncode == 0 and "No errors detected." in verify.stdout
