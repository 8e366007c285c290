"""Socket and random-device ioctls (tests/fixtures/ioctl_net.c; LTP's sockioctl01 and
ioctl07): SIOCATMARK, SIOCGIFCONF (its buffer pointer translated), SIOCGIFFLAGS,
SIOCSIFFLAGS, SIOCGIFINDEX and RNDGETENTCNT reach the host with their structs, and a NULL
argument is EFAULT. qemuser answered ENOTTY to every one."""

from __future__ import annotations

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("ioctl_net"))
def test_socket_ioctls_pass_through(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "ioctl_net", flavour, status=0, timeout=60)
    assert result.stdout == (
        b"SIOCATMARK: ok\n"
        b"SIOCATMARK, NULL: EFAULT\n"
        b"SIOCGIFCONF: ok, whole entries 1, lo listed 1\n"
        b"SIOCGIFCONF, no buffer: ok, length as filled 1\n"
        b"SIOCGIFFLAGS lo: ok, loopback 1\n"
        b"SIOCGIFFLAGS, NULL: EFAULT\n"
        b"SIOCSIFFLAGS, NULL: EFAULT\n"
        b"SIOCGIFINDEX lo: ok, same as if_nametoindex 1\n"
        b"RNDGETENTCNT: ok, count >= 0 1\n"
    )
