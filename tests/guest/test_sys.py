"""Process information, limits, clocks, scheduling, prctl and polling, checked against Linux.

The fixtures print what Linux gives on the same calls (checked by running them natively);
the lines that depend on the machine are computed here from the host, which is the guest's.
"""

from __future__ import annotations

import os
import resource
import time

import pytest

from tests.conftest import fixture_path, run_guest

BUILDS = [(arch, flavour) for arch in ("aarch64", "riscv64") for flavour in ("static", "dynamic")]


def _limit(value: int) -> int:
    return (1 << 64) - 1 if value == resource.RLIM_INFINITY else value


def _resolution(clock: int) -> str:
    ns = round(time.clock_getres(clock) * 1_000_000_000)
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def expected_sys_info(arch: str) -> str:
    soft, hard = (_limit(v) for v in resource.getrlimit(resource.RLIMIT_NOFILE))
    resuid = ",".join(map(str, os.getresuid()))
    resgid = ",".join(map(str, os.getresgid()))
    total_pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4096
    return f"""\
uname=ok sysname=Linux machine={arch}
pid-is-tid=1 ppid={os.getpid()}
uid={os.getuid()} euid={os.geteuid()} gid={os.getgid()} egid={os.getegid()}
resuid={resuid} resgid={resgid}
groups={len(os.getgroups())}
getgroups negative=EINVAL
set_tid_address=tid:1
set_robust_list bad length=EINVAL
NOFILE soft={soft} hard={hard}
setrlimit NOFILE=ok now soft=100
soft above hard=EINVAL
prlimit STACK=ok now soft=4194304 hard-infinite=1
setrlimit CORE 0=ok now=0/0
bad resource=EINVAL
getrusage=ok usec-in-range=1
getrusage bad who=EINVAL
getrandom=32,32 differ=1
getrandom bad flags=EINVAL
getrandom bad pointer=EFAULT
monotonic non-decreasing=1
nanosleep=ok slept-at-least-20ms=1
clock_nanosleep abs=0 reached=1
clock_nanosleep raw=95 thread-cpu=22
nanosleep bad nsec=EINVAL
getres monotonic={_resolution(time.CLOCK_MONOTONIC)}
getres realtime-coarse={_resolution(5)}
gettime bad clock=EINVAL
getres bad clock=EINVAL
gettimeofday close to realtime=1 usec-in-range=1
process cpu clock advanced=1
times positive=1
sched_getaffinity=ok count={len(os.sched_getaffinity(0))}
sched_getaffinity tiny=EINVAL
sched_yield=0
priority fifo=1..99 other=0..0 bad policy=EINVAL
getscheduler=0 setscheduler other=ok rr_get_interval=ok in-range=1
getcpu=ok cpu-in-set=1 node-set=1
sysinfo=ok uptime-positive=1 procs-positive=1 totalram-pages={total_pages}
PR_SET_NAME=0 name=qemuser-test /proc/self/comm=qemuser-test
long name=a-name-longer-t
dumpable=1 after 0=0 after 1=1
pdeathsig=10 cleared=0
PR_GET_SECCOMP=0
bad option=EINVAL
"""


@pytest.mark.parametrize(("arch", "flavour"), BUILDS)
def test_process_information_limits_clocks_and_prctl(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "sys_info", flavour))
    assert result.stderr == b""
    assert result.stdout.decode() == expected_sys_info(arch)
    assert result.returncode == 0


SYS_POLL_EXPECTED = """\
poll empty=1 revents=0,0x4,0
poll data=2 revents=0x1,0x4
poll bad fd=1 revents=0x20
poll timeout=0 waited-enough=1
poll after close=1 revents=0x11
poll bad pointer=EFAULT
ppoll=1 left-under-5s=1 left-positive=1
ppoll bad timeout=EINVAL
ppoll bad sigsetsize=EINVAL
select=1 read-ready=0 write-ready=1
select data=1 read-ready=1
select bad fd=EBADF
select negative n=EINVAL
select timeout=0 cleared=0 waited-enough=1
pselect sleep=0 waited-enough=1
pending while blocked, handled=0
ppoll with open mask=EINTR handled=10
mask restored=1
ppoll with blocking mask=0 handled=0
pselect with open mask=EINTR handled=10
"""


@pytest.mark.parametrize(("arch", "flavour"), BUILDS)
def test_poll_select_timeouts_and_signal_masks(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "sys_poll", flavour))
    assert result.stderr == b""
    assert result.stdout.decode() == SYS_POLL_EXPECTED
    assert result.returncode == 0
