"""The ELF loader accepts what Linux's binfmt_elf accepts, and refuses the rest with its errno.

Each case was run natively (the same shapes built for x86_64, on this x86_64 Linux 6.x host)
and under qemu-user 7.2; where they differ, Linux is followed (said at the case). Refusals
Linux meets after execve's point of no return are `fatal` (the caller dies of SIGSEGV).
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path

import pytest

from qemuser.cpu import CPUS
from qemuser.loader.elf import LoadError, load_image, read_elf_info
from qemuser.loader.memory import PROT_READ, PROT_WRITE, AddressSpace
from tests.tiny_elf import PAGE, PF_R, PF_W, PT_LOAD, TEXT, Segment, program

RISCV64_TASK_SIZE = 1 << 38  # Sv39


@pytest.fixture
def mem() -> AddressSpace:
    return AddressSpace(CPUS["aarch64"].new_engine(), PAGE, mmap_top=0x7000_0000)


def write_program(tmp_path: Path, data: bytes, mode: int = 0o755, name: str = "prog") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


def load(mem: AddressSpace, path: str, task_size: int = 1 << 48):
    info = read_elf_info(path)
    data = Path(path).read_bytes()
    return load_image(mem, info, data, None, path, task_size=task_size)


def refusal(exc: pytest.ExceptionInfo[LoadError]) -> tuple[int, bool, str]:
    return exc.value.errno, exc.value.fatal, str(exc.value)


# ---- accepted by Linux, refused before ----------------------------------------------------


def test_bss_only_segment_whose_offset_lies_past_the_end_of_the_file(
    mem: AddressSpace, tmp_path: Path
) -> None:
    # what GNU ld writes for a -nostdlib program with a zero-initialised array
    bss = Segment(PT_LOAD, PF_R | PF_W, 0xFFF0, 0x41_FFF0, 0, 0x1000, 0x10000)
    data = program("aarch64", (bss,))
    assert len(data) < 0xFFF0
    path = write_program(tmp_path, data)
    image = load(mem, path)
    m = mem.find(0x41_F000)
    assert m is not None and (m.start, m.end, m.prot) == (
        0x41_F000,
        0x42_1000,
        PROT_READ | PROT_WRITE,
    )
    assert m.name == "" and m.inode == 0  # anonymous, as vm_brk maps it
    assert mem.read(0x41_F000, 0x2000) == bytes(0x2000)
    mem.write(0x42_0FFF, b"\x01")  # writable to its last byte
    assert image.end == 0x42_1000


def test_last_segment_running_past_the_end_of_the_file_is_mapped(
    mem: AddressSpace, tmp_path: Path
) -> None:
    data = program("aarch64", text_size=0x3000)  # the file holds 0x100-odd bytes of it
    path = write_program(tmp_path, data)
    load(mem, path)
    m = mem.find(TEXT)
    assert m is not None and (m.start, m.end) == (TEXT, TEXT + 0x3000)
    assert mem.read(TEXT, len(data)) == data


def test_data_segment_wholly_past_the_end_of_the_file_without_bss_is_mapped(
    mem: AddressSpace, tmp_path: Path
) -> None:
    data_seg = Segment(PT_LOAD, PF_R | PF_W, 0x10_0000, 0x60_0000, 0x1000, 0x1000)
    path = write_program(tmp_path, program("aarch64", (data_seg,)))
    load(mem, path)
    m = mem.find(0x60_0000)
    assert m is not None and (m.start, m.end) == (0x60_0000, 0x60_1000)


def test_first_pt_interp_counts(tmp_path: Path) -> None:
    path = write_program(
        tmp_path, program("aarch64", interps=(b"/first/ld.so\0", b"/second/ld.so\0"))
    )
    assert read_elf_info(path).interp == b"/first/ld.so"


def test_program_headers_of_exactly_64_kib_are_read(tmp_path: Path) -> None:
    # 1170 headers of 56 bytes = 65520 bytes: the most binfmt_elf takes
    data = program("aarch64", phnum=1170, padding=1169 * 56)
    assert read_elf_info(write_program(tmp_path, data)).phnum == 1170


# ---- refused by Linux before the point of no return: execve returns the errno ------------


def test_file_without_execute_permission_is_eacces(tmp_path: Path) -> None:
    path = write_program(tmp_path, program("aarch64"), mode=0o644)
    with pytest.raises(LoadError) as exc:
        read_elf_info(path)
    assert refusal(exc) == (errno.EACCES, False, f"'{path}': Permission denied (not executable)")


def test_fifo_is_eacces_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "fifo")
    os.mkfifo(path, 0o755)
    outcome: list[BaseException | object] = []

    def attempt() -> None:
        try:
            outcome.append(read_elf_info(path))
        except BaseException as exc:  # noqa: BLE001  (handed to the test's thread)
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # it waits for a writer: give it one, so that it ends
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail("opening a FIFO as a program blocked")
    (result,) = outcome
    assert isinstance(result, LoadError)
    assert (result.errno, result.fatal) == (errno.EACCES, False)
    assert str(result) == f"'{path}': Permission denied (not a regular file)"


def test_character_device_is_eacces(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as exc:
        read_elf_info("/dev/null")
    assert refusal(exc) == (
        errno.EACCES,
        False,
        "'/dev/null': Permission denied (not a regular file)",
    )


def test_pt_interp_without_its_nul_is_enoexec(tmp_path: Path) -> None:
    # qemu-user: "Invalid PT_INTERP entry"; Linux: ENOEXEC
    path = write_program(tmp_path, program("aarch64", interps=(b"/lib/ld.so",)))
    with pytest.raises(LoadError) as exc:
        read_elf_info(path)
    assert refusal(exc) == (
        errno.ENOEXEC,
        False,
        f"'{path}': Exec format error (PT_INTERP is not NUL-terminated)",
    )


def test_pt_interp_past_the_end_of_the_file_is_eio(tmp_path: Path) -> None:
    data = program("aarch64", interps=(b"/lib/ld.so\0",))
    path = write_program(tmp_path, data[:-4])
    with pytest.raises(LoadError) as exc:
        read_elf_info(path)
    assert refusal(exc) == (
        errno.EIO,
        False,
        f"'{path}': Input/output error (PT_INTERP lies past the end of the file)",
    )


def test_more_than_64_kib_of_program_headers_is_enoexec(tmp_path: Path) -> None:
    # qemu-user runs this one; Linux refuses it
    data = program("aarch64", phnum=1171, padding=1170 * 56)
    path = write_program(tmp_path, data)
    with pytest.raises(LoadError) as exc:
        read_elf_info(path)
    assert refusal(exc) == (errno.ENOEXEC, False, f"'{path}' is a truncated or corrupt ELF file")


# ---- refused by Linux while it maps the segments (fatal for an execve caller) ------------


def test_file_size_above_memory_size_is_einval(mem: AddressSpace, tmp_path: Path) -> None:
    # qemu-user runs this one; Linux refuses it
    size = len(program("aarch64"))
    path = write_program(tmp_path, program("aarch64", text_size=size, text_memsz=size - 8))
    with pytest.raises(LoadError) as exc:
        load(mem, path)
    assert refusal(exc) == (
        errno.EINVAL,
        True,
        f"'{path}': Invalid argument (a segment's file size exceeds its memory size)",
    )
    assert mem.find(TEXT) is None  # refused before anything was mapped


@pytest.mark.parametrize(
    ("vaddr", "memsz"),
    [
        (RISCV64_TASK_SIZE, PAGE),  # starts at the end of user space
        (0x60_0000, 1 << 40),  # a 1 TiB bss: took 17-24 s, then the stack landed on it
        (RISCV64_TASK_SIZE - PAGE, 2 * PAGE),  # straddles the end
    ],
)
def test_segment_past_the_user_address_space_is_enomem_at_once(
    mem: AddressSpace, tmp_path: Path, vaddr: int, memsz: int
) -> None:
    bss = Segment(PT_LOAD, PF_R | PF_W, 0, vaddr, 0, memsz)
    path = write_program(tmp_path, program("riscv64", (bss,)))
    with pytest.raises(LoadError) as exc:
        load(mem, path, task_size=RISCV64_TASK_SIZE)
    assert refusal(exc) == (
        errno.ENOMEM,
        True,
        f"'{path}': Cannot allocate memory (a segment ends past the 256 GiB user address space)",
    )
    assert mem.find(TEXT) is None


def test_segment_ending_at_the_end_of_the_user_address_space_is_mapped(
    mem: AddressSpace, tmp_path: Path
) -> None:
    bss = Segment(PT_LOAD, PF_R | PF_W, 0, RISCV64_TASK_SIZE - 2 * PAGE, 0, 2 * PAGE)
    path = write_program(tmp_path, program("riscv64", (bss,)))
    load(mem, path, task_size=RISCV64_TASK_SIZE)
    assert mem.find(RISCV64_TASK_SIZE - 1) is not None


def test_writable_bss_starting_in_a_page_past_the_end_of_the_file_is_efault(
    mem: AddressSpace, tmp_path: Path
) -> None:
    # padzero() clears the rest of that page and faults: Linux kills the caller (SIGSEGV);
    # qemu-user dies of SIGBUS there
    data_seg = Segment(PT_LOAD, PF_R | PF_W, 0x10_0000, 0x60_0000, 0x800, 0x2000)
    path = write_program(tmp_path, program("aarch64", (data_seg,)))
    with pytest.raises(LoadError) as exc:
        load(mem, path)
    assert refusal(exc) == (
        errno.EFAULT,
        True,
        f"'{path}' is a truncated ELF file (a segment lies past its end)",
    )


def test_bss_only_segment_past_the_end_with_an_unaligned_start_is_mapped(
    mem: AddressSpace, tmp_path: Path
) -> None:
    # no file bytes, so no padzero: Linux maps it anonymous and runs the program
    bss = Segment(PT_LOAD, PF_R | PF_W, 0x10_0123, 0x60_0123, 0, 0x2000)
    path = write_program(tmp_path, program("aarch64", (bss,)))
    load(mem, path)
    assert mem.read(0x60_0000, 0x3000) == bytes(0x3000)


def test_unix_socket_is_eacces(tmp_path: Path) -> None:
    path = str(tmp_path / "sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        with pytest.raises(LoadError) as exc:
            read_elf_info(path)
    assert refusal(exc) == (
        errno.EACCES,
        False,
        f"'{path}': Permission denied (not a regular file)",
    )
