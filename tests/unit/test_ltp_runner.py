"""conformance/ltp.py's reading of LTP: exit statuses, verdicts, runtest files, unsafe lists,
and one run of a stand-in "emulator" (a shell script) to its JSON report."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
_spec = importlib.util.spec_from_file_location("ltp_runner", ROOT / "conformance" / "ltp.py")
assert _spec is not None and _spec.loader is not None
ltp = importlib.util.module_from_spec(_spec)
sys.modules["ltp_runner"] = ltp  # dataclasses look their module up by name
_spec.loader.exec_module(ltp)

OUTPUT = "tst_test.c:1: TINFO: hello\nfoo.c:12: TFAIL: foo() expected EBADF: ENOSYS (38)\n"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, ("pass", "", "")),
        (32, ("conf", "TCONF", "")),  # TCONF alone: skipped
        (1, ("fail", "TFAIL", "foo.c:12: TFAIL: foo() expected EBADF: ENOSYS (38)")),
        (2 | 4 | 32, ("fail", "TBROK|TWARN", "foo.c:12: TFAIL: foo() expected EBADF: ENOSYS (38)")),
        (-9, ("fail", "killed by SIGKILL", "foo.c:12: TFAIL: foo() expected EBADF: ENOSYS (38)")),
        (127, ("fail", "exit 127", "foo.c:12: TFAIL: foo() expected EBADF: ENOSYS (38)")),
    ],
)
def test_ltp_exit_status_bits(status: int, expected: tuple[str, str, str]) -> None:
    assert ltp.classify(status, OUTPUT) == expected


@pytest.mark.parametrize(
    ("ours", "reference", "verdict"),
    [
        ("pass", "pass", "PASS"),
        ("pass", "conf", "PASS"),
        ("fail", "pass", "FAIL"),
        ("timeout", "pass", "TIMEOUT"),
        ("fail", "fail", "both-fail"),
        ("timeout", "fail", "both-fail"),
        ("pass", "fail", "qemu-only-fail"),
        ("conf", "pass", "qemuser-skip"),
        ("conf", "conf", "SKIP"),
    ],
)
def test_verdicts(ours: str, reference: str, verdict: str) -> None:
    assert ltp.verdict(ltp.Run(ours, 0, 0.0), ltp.Run(reference, 0, 0.0)) == verdict


def test_runtest_entries_and_unsafe_tests(tmp_path: Path) -> None:
    runtest = tmp_path / "syscalls"
    runtest.write_text("#DESCRIPTION: x\n\nread01 read01\nfork06 fork_procs -n 1000\n")
    assert ltp.read_runtest(runtest) == [
        ("read01", ["read01"]),
        ("fork06", ["fork_procs", "-n", "1000"]),
    ]
    assert ltp.unsafe_reason("read01", "read01") is None
    assert ltp.unsafe_reason("chown04_16", "chown04_16") == "needs a block device"
    assert ltp.unsafe_reason("fstatfs01_64", "fstatfs01_64") == "needs a block device"
    assert ltp.unsafe_reason("swapon01", "swapon01") == "needs a block device"
    assert ltp.unsafe_reason("settimeofday01", "settimeofday01") == (
        "changes host-wide state (mounts, swap, clock, modules, devices)"
    )


def test_a_run_side_by_side_with_its_report(tmp_path: Path) -> None:
    root = tmp_path / "ltp"
    bindir = root / "testcases" / "bin"
    bindir.mkdir(parents=True)
    (root / "runtest").mkdir()
    (root / "runtest" / "syscalls").write_text(
        "good good\nbad bad\nskipped skipped\nmount01 mount01\nabsent absent\n"
    )
    for name in ("good", "bad", "skipped", "mount01"):
        (bindir / name).write_bytes(b"\x7fELF" + bytes(60))
    # the stand-ins: exit with what LTP's library would, by test name; the reference passes
    # everything, qemuser fails "bad" and skips "skipped"
    ours = tmp_path / "ours"
    ours.write_text(
        '#!/bin/sh\ncase "$(basename "$1")" in\n'
        "  bad) echo 'bad.c:3: TFAIL: bad() failed'; exit 1;;\n"
        "  skipped) echo 'x.c:1: TCONF: not here'; exit 32;;\nesac\n"
        'test "$TMPDIR" = "$(pwd)" && test -n "$LTPROOT" || exit 2\n'
    )
    reference = tmp_path / "reference"
    reference.write_text("#!/bin/sh\nexit 0\n")
    for script in (ours, reference):
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    report = tmp_path / "report.json"
    status = ltp.main(
        [str(root), "aarch64", "--qemuser", str(ours), "--qemu", str(reference),
         "--json", str(report), "--workdir", str(tmp_path / "work"), "-j", "2"]
    )  # fmt: skip
    assert status == 0
    verdicts = {r["name"]: (r["verdict"], r["reason"]) for r in json.loads(report.read_text())}
    assert verdicts == {
        "good": ("PASS", ""),
        "bad": ("FAIL", ""),
        "skipped": ("qemuser-skip", ""),
        "mount01": ("not-run", "needs a block device"),
        "absent": ("not-run", "not built"),
    }
    assert os.listdir(tmp_path / "work") == []  # the temporary directories are gone


def test_a_run_that_reuses_the_reference(tmp_path: Path) -> None:
    """--reference: qemu-user's runs come from a saved --json run (it is never started: the
    given reference fails if it is), and a test the saved run lacks runs under both."""
    root = tmp_path / "ltp"
    bindir = root / "testcases" / "bin"
    bindir.mkdir(parents=True)
    (root / "runtest").mkdir()
    (root / "runtest" / "syscalls").write_text("good good\nbad bad\nnew new\n")
    for name in ("good", "bad", "new"):
        (bindir / name).write_bytes(b"\x7fELF" + bytes(60))
    ours = tmp_path / "ours"
    ours.write_text('#!/bin/sh\ncase "$(basename "$1")" in\n  bad) exit 1;;\nesac\n')
    reference = tmp_path / "reference"
    reference.write_text('#!/bin/sh\ntest "$(basename "$1")" = new || exit 2\n')
    for script in (ours, reference):
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps([
        {"name": name, "command": [name], "verdict": "PASS", "reason": "",
         "qemuser": {"kind": "pass", "status": 0, "seconds": 1.0, "detail": "", "message": ""},
         "qemu": {"kind": kind, "status": status, "seconds": 2.5, "detail": "", "message": ""}}
        for name, kind, status in (("good", "pass", 0), ("bad", "pass", 0))
    ]))  # fmt: skip
    report = tmp_path / "report.json"
    status = ltp.main(
        [str(root), "aarch64", "--qemuser", str(ours), "--qemu", str(reference),
         "--reference", str(saved), "--json", str(report), "--workdir", str(tmp_path / "work")]
    )  # fmt: skip
    assert status == 0
    results = {r["name"]: r for r in json.loads(report.read_text())}
    assert {n: r["verdict"] for n, r in results.items()} == {
        "good": "PASS",
        "bad": "FAIL",
        "new": "PASS",
    }
    assert results["good"]["qemu"]["seconds"] == 2.5  # the saved run, not a new one
    assert ltp.main([str(root), "aarch64", "--qemuser", str(ours), "--qemu", str(reference),
                     "--reference", str(tmp_path / "absent.json")]) == 2  # fmt: skip
