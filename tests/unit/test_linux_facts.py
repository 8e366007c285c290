"""Per-architecture Linux facts written as numbers in qemuser/user/linux.py, checked against
what they are derived from. linux.py is read with `ast` (importing it would build nothing, but
it imports unicorn)."""

from __future__ import annotations

import ast
from pathlib import Path

from qemuser.syscalls.abi.ucontext import A64_RT_SIGFRAME

LINUX = Path(__file__).resolve().parents[2] / "qemuser" / "user" / "linux.py"


def constant(name: str) -> object:
    for node in ast.parse(LINUX.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def test_aarch64_minsigstksz_is_the_rt_sigframe_plus_a_frame_record_and_slack() -> None:
    # arch/arm64/kernel/signal.c: signal_minsigstksz, with no SVE/SME contexts
    assert constant("AARCH64_MINSIGSTKSZ") == A64_RT_SIGFRAME.size + 16 + 16 == 4720
