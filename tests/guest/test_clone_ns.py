"""clone() with CLONE_NEW* flags (tests/fixtures/clone_ns.c; LTP's clone09): the child gets
new network, UTS and pid namespaces (pid 1 in its new one), the parent keeps its own. qemuser
ignored the flags. A CLONE_VM child (a guest thread, on the emulator's one host thread)
cannot have namespaces of its own: refused with EINVAL, as qemu-user refuses it. The fixture
renames the host only from inside a UTS namespace of its own (it checks the namespace
first), so a regression cannot rename the machine. Needs root."""

from __future__ import annotations

import os

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.skipif(os.getuid() != 0, reason="namespaces need CAP_SYS_ADMIN")
@pytest.mark.parametrize(("arch", "flavour"), all_builds("clone_ns"))
def test_the_child_gets_new_namespaces(arch: str, flavour: str) -> None:
    # the one difference from Linux: a CLONE_VM child cannot have namespaces of its own
    refused = ((b"CLONE_VM|CLONE_NEWNET: a child\n", b"CLONE_VM|CLONE_NEWNET: EINVAL\n"),)
    result = run_like_native(arch, "clone_ns", flavour, status=0, timeout=60, differences=refused)
    assert result.stdout == (
        b"CLONE_NEWNET: child in a new one 1\n"
        b"parent's still its own 1\n"
        b"CLONE_NEWUTS: child set its name 1\n"
        b"parent's name unchanged 1\n"
        b"CLONE_NEWPID: child is pid 1 1\n"
        b"next plain child is not 1\n"
        b"CLONE_VM|CLONE_NEWNET: EINVAL\n"
    )
