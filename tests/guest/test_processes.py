"""fork, execve, wait statuses; threads; code that changes under the CPU.

Each run must print what the same source prints built for the host and exit as it does, except
code_remap's, which writes each architecture's own machine code (no native build): its lines
are written here."""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("proc_fork_exec"))
def test_fork_exec_wait(arch: str, flavour: str) -> None:
    run_like_native(arch, "proc_fork_exec", flavour, status=3)


@pytest.mark.parametrize(("arch", "flavour"), all_builds("code_remap"))
def test_generated_code_is_never_stale(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "code_remap", flavour))
    assert result.stdout == (
        b"first: 11\nrewritten in place: 22\nsame address: 1, after remap: 33\n"
        b"after mprotect flip: 44\nown text: 1, patched: 55, patched again: 66\n"
    )
    assert result.returncode == 0


@pytest.mark.parametrize(("arch", "flavour"), all_builds("thread_basic"))
def test_threads_mutexes_condvars_atomics_blocking_read(arch: str, flavour: str) -> None:
    run_like_native(arch, "thread_basic", flavour, status=0)


@pytest.mark.parametrize(("arch", "flavour"), all_builds("proc_server"))
def test_tcp_server_forked_clients_exec_chain_job_control(arch: str, flavour: str) -> None:
    run_like_native(arch, "proc_server", flavour, status=0)
