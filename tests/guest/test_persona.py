"""personality(2) (tests/fixtures/persona.c; LTP's personality01): each call answers the
previous persona, 0xffffffff only asks, a forked child keeps its parent's, and the guest starts
with the persona qemuser inherited; with STICKY_TIMEOUTS, select() leaves the caller's timeout
alone (personality02). qemuser answered 0 and kept nothing."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native

# The native reference runs under `setarch -R` (tests/conftest.py: qemuser's layouts are not
# randomised), so it starts with ADDR_NO_RANDOMIZE; qemuser itself, and so its guest, without.
START = (
    (b"at start: 0x40000\n", b"at start: 0\n"),
    (b"set PER_LINUX32: previous 0x40000\n", b"set PER_LINUX32: previous 0\n"),
)


@pytest.mark.parametrize(("arch", "flavour"), all_builds("persona"))
def test_personality_is_kept(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(
        arch, "persona", flavour, status=0, workdir=tmp_path, timeout=60, differences=START
    )
    assert result.stdout == (
        b"at start: 0\n"
        b"set PER_LINUX32: previous 0\n"
        b"now: 0x8\n"
        b"set PER_LINUX | ADDR_NO_RANDOMIZE: previous 0x8\n"
        b"child: 0x40000\n"
        b"STICKY_TIMEOUTS: select left 10 us\n"
        b"back to PER_LINUX: previous 0x4000000\n"
        b"now: 0\n"
        b"select left 0 us\n"
    )
