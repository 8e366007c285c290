"""Layouts of the capability and file-handle records (qemuser/syscalls/abi/capability.py,
filehandle.py), held against the kernel's uapi headers through the cross compilers' offsetof()
(struct file_handle is glibc's, from <fcntl.h>, as it is no uapi struct)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from qemuser.syscalls.abi.capability import CAP_DATA, CAP_HEADER, cap_data_count
from qemuser.syscalls.abi.filehandle import FILE_HANDLE_HEAD, MOUNT_ID, MOUNT_ID_UNIQUE


def test_sizes_and_offsets() -> None:
    assert (CAP_HEADER.size, CAP_HEADER.offsets) == (8, {"version": 0, "pid": 4})
    assert (CAP_DATA.size, CAP_DATA.offsets) == (
        12,
        {"effective": 0, "permitted": 4, "inheritable": 8},
    )
    assert (FILE_HANDLE_HEAD.size, FILE_HANDLE_HEAD.offsets) == (
        8,
        {"handle_bytes": 0, "handle_type": 4},
    )
    assert (MOUNT_ID.size, MOUNT_ID_UNIQUE.size) == (4, 8)


def test_data_structs_per_version() -> None:
    assert cap_data_count(0x19980330) == 1
    assert cap_data_count(0x20071026) == 2
    assert cap_data_count(0x20080522) == 2
    assert cap_data_count(0) == 2


SOURCE = """
#define _GNU_SOURCE
#include <stddef.h>
#include <fcntl.h>
#include <linux/capability.h>
_Static_assert(sizeof(struct __user_cap_header_struct) == 8, "header");
_Static_assert(offsetof(struct __user_cap_header_struct, pid) == 4, "pid");
_Static_assert(sizeof(struct __user_cap_data_struct) == 12, "data");
_Static_assert(offsetof(struct __user_cap_data_struct, permitted) == 4, "permitted");
_Static_assert(offsetof(struct __user_cap_data_struct, inheritable) == 8, "inheritable");
_Static_assert(offsetof(struct file_handle, handle_type) == 4, "handle_type");
_Static_assert(offsetof(struct file_handle, f_handle) == 8, "f_handle");
_Static_assert(MAX_HANDLE_SZ == 128, "MAX_HANDLE_SZ");
_Static_assert(_LINUX_CAPABILITY_VERSION_3 == 0x20080522, "v3");
"""


@pytest.mark.parametrize("compiler", ["aarch64-linux-gnu-gcc", "riscv64-linux-gnu-gcc", "gcc"])
def test_layouts_match_the_compilers_offsetof(compiler: str, tmp_path: Path) -> None:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed (setup.sh installs the cross compilers)")
    source = tmp_path / "layouts.c"
    source.write_text(SOURCE)
    result = subprocess.run(
        [compiler, "-fsyntax-only", str(source)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
