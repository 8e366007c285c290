"""clone(CLONE_VM) without CLONE_THREAD (LTP's clone02; tests/fixtures/clone_vm.c): qemuser runs
such a child as a guest thread of its own host process, yet on Linux it is a process whose
parent is its creator (with CLONE_PARENT, its creator's parent). getppid() used to give the
emulator's host parent: clone02's child then sent SIGUSR2 to whatever had started qemuser."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("clone_vm"))
def test_clone_vm_child_sees_its_creator_as_parent(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "clone_vm", flavour, status=0, workdir=tmp_path, timeout=60)
    assert result.stdout == (
        b"CLONE_VM: child ran yes, getppid() is right\n"
        b"CLONE_VM|CLONE_PARENT: child ran yes, getppid() is right\n"
    )
