"""fork, execve, wait statuses; code that changes under the CPU."""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest

FORK_EXEC_OUTPUT = b"""waitpid returned the child: 1
fork child: exited 42
parent read 17 bytes: through the pipe
pipe child: exited 0
exec'd child: argc=3 argv[2]=7 env QEMUSER_T=yes
exec child: exited 7
killed child: killed by signal 9
execve missing: -1 No such file or directory
execve directory: -1 Permission denied
waitpid no child: -1 No child processes
"""


@pytest.mark.parametrize(("arch", "flavour"), all_builds("proc_fork_exec"))
def test_fork_exec_wait(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "proc_fork_exec", flavour))
    assert result.stdout == FORK_EXEC_OUTPUT
    assert result.returncode == 3


@pytest.mark.parametrize(("arch", "flavour"), all_builds("code_remap"))
def test_generated_code_is_never_stale(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "code_remap", flavour))
    assert result.stdout == (
        b"first: 11\nrewritten in place: 22\nsame address: 1, after remap: 33\n"
        b"after mprotect flip: 44\nown text: 1, patched: 55, patched again: 66\n"
    )
    assert result.returncode == 0


THREAD_OUTPUT = b"""counter 160000 atomic 160000 turns 8 join sum 288 main tls 0
reader got 7 bytes: wake up
done
"""


@pytest.mark.parametrize(("arch", "flavour"), all_builds("thread_basic"))
def test_threads_mutexes_condvars_atomics_blocking_read(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "thread_basic", flavour))
    assert result.stdout == THREAD_OUTPUT
    assert result.returncode == 0


SERVER_OUTPUT = b"""clients done, status sum 46
depth 3 same pid 1
depth 2 same pid 1
depth 1 same pid 1
depth 0 same pid 1
exec chain exit 0
stopped 1 by 19
child leads its group 1
continued 1
then exited 21
"""


@pytest.mark.parametrize(("arch", "flavour"), all_builds("proc_server"))
def test_tcp_server_forked_clients_exec_chain_job_control(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "proc_server", flavour))
    assert result.stdout == SERVER_OUTPUT
    assert result.returncode == 0
