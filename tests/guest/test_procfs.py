"""/proc/self and /proc/cpuinfo describe the guest, not the emulator.

The expected text is written here, not taken from a native run: /proc/cpuinfo is the guest
architecture's, and the command line's size depends on the program's path."""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest


@pytest.mark.parametrize(("arch", "flavour"), all_builds("proc_self"))
def test_proc_self_describes_the_guest(arch: str, flavour: str) -> None:
    program = fixture_path(arch, "proc_self", flavour)
    result = run_guest(arch, program, "hello")
    name = program.name
    cmdline_size = len(str(program)) + 1 + len("hello") + 1
    cpu_line = b"cpuinfo: Features 1 atomics 1\n" if arch == "aarch64" else b"cpuinfo: isa rv64 1\n"
    assert (
        result.stdout
        == (
            f"exe basename: {name}\n"
            "maps has [stack] 1 exe 1\n"
            "main() lies in an r-x mapping of the exe: 1\n"
            f"cmdline: {cmdline_size} bytes, argv[1]=hello\n"
            "auxv: pagesz 4096, entry matches getauxval 1\n"
            f"stat: pid matches 1, comm {name[:15]}\n"
            "status has Name line: 1\n"
        ).encode()
        + cpu_line
    )
    assert result.returncode == 2
