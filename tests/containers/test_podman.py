"""Foreign containers with podman (runc), as people use qemu-user-static for: `podman run
--arch arm64` of an image imported from a Debian arm64 root, and `podman build --arch arm64`
with RUN steps that fork, exec, write files and install a Debian package with dpkg. The runtime
pivots into the image root, in new mount and pid namespaces; the kernel finds qemuser's static
interpreter through the registration (F)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.containers.conftest import RUN_OPTIONS
from tests.containers.images import extra_deb


def test_run_bash_and_python(registered, podman_store, arm64_image):
    script = (
        'uname -m; echo "pid $$"; python3.11 -c "import platform; print(6 * 7, platform.machine())"'
    )
    result = podman_store(
        "run", "--rm", "--arch", "arm64", *RUN_OPTIONS, arm64_image, "/bin/bash", "-c", script
    )
    assert result.stdout == b"aarch64\npid 1\n42 aarch64\n", result.stderr
    assert result.returncode == 0


def test_run_exit_status_and_argv0(registered, podman_store, arm64_image):
    """The container's exit status is the guest's; P: argv[0] arrives as given."""
    script = 'exec -a custom-name /bin/bash -c "echo \\$0; exit 3"'
    result = podman_store(
        "run", "--rm", "--arch", "arm64", *RUN_OPTIONS, arm64_image, "/bin/bash", "-c", script
    )
    assert (result.returncode, result.stdout) == (3, b"custom-name\n"), result.stderr


def test_run_keeps_cwd_fds_and_credentials(registered, podman_store, arm64_image):
    """The guest is the process the runtime started: its working directory, its stdin and its
    user and group (here nobody's) are the container's."""
    script = "pwd; /bin/busybox tr a-z A-Z; id -u; id -g"
    args = ["run", "--rm", "-i", "--arch", "arm64", *RUN_OPTIONS, "--user", "65534:65534"]
    args += ["-w", "/usr/lib", arm64_image, "/bin/bash", "-c", script]
    result = podman_store(*args, input=b"from stdin\n")
    assert result.stdout == b"/usr/lib\nFROM STDIN\n65534\n65534\n", result.stderr
    assert result.returncode == 0


CONTAINERFILE = """\
FROM {image}
COPY {deb} /tmp/
RUN for i in 1 2 3; do echo "step $i $(uname -m)"; done > /loop.txt
RUN python3.11 -c "open('/py.txt', 'w').write(str(6 * 7) + '\\\\n')"
RUN dpkg -i /tmp/{deb} && rm /tmp/{deb}
"""


def test_build_with_run_steps_then_run(registered, podman_store, arm64_image, tmp_path: Path):
    deb = extra_deb("hello")
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(deb, context / deb.name)
    (context / "Containerfile").write_text(CONTAINERFILE.format(image=arm64_image, deb=deb.name))
    tag = "localhost/qemuser-built-arm64:test"
    built = podman_store(
        "build", "--arch", "arm64", *RUN_OPTIONS, "-t", tag, str(context), timeout=900
    )
    assert built.returncode == 0, built.stderr.decode() + built.stdout.decode()
    assert b"Setting up hello (" in built.stdout
    script = "cat /loop.txt /py.txt; hello; dpkg-query -W -f '${Status}\\n' hello; ls /tmp"
    result = podman_store(
        "run", "--rm", "--arch", "arm64", *RUN_OPTIONS, tag, "/bin/bash", "-c", script
    )
    assert result.stdout == (
        b"step 1 aarch64\nstep 2 aarch64\nstep 3 aarch64\n42\nHello, world!\ninstall ok installed\n"
    ), result.stderr
    assert result.returncode == 0
