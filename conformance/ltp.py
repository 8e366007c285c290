"""Run the Linux Test Project's syscalls tests under qemuser and under qemu-user, side by side.

    .venv/bin/python conformance/ltp.py /tmp/ltp-build-aarch64/ltp aarch64 -j 3 --json out.json

LTP is built outside the project (its code is never committed), static so that no sysroot is
needed, for each ARCH (aarch64, riscv64); about 25 minutes an arch with make -j2:

    apt-get install autoconf automake m4 pkg-config bison flex libtool
    git clone https://github.com/linux-test-project/ltp /tmp/ltp-src
    make -C /tmp/ltp-src autotools
    cp -a /tmp/ltp-src /tmp/ltp-build-ARCH/src && cd /tmp/ltp-build-ARCH/src
    ./configure --host=ARCH-linux-gnu --build=x86_64-linux-gnu --prefix=/tmp/ltp-build-ARCH/ltp \
        CC=ARCH-linux-gnu-gcc AR=ARCH-linux-gnu-ar RANLIB=ARCH-linux-gnu-ranlib \
        STRIP=ARCH-linux-gnu-strip LDFLAGS=-static
    make -j2 -C lib && make -j2 -k -C testcases/kernel/syscalls
    make -C testcases/kernel/syscalls install
    mkdir -p ../ltp/runtest && cp runtest/syscalls ../ltp/runtest/

LTPROOT is an LTP install (`make install` of testcases/kernel/syscalls): the test programs in
LTPROOT/testcases/bin, the list in LTPROOT/runtest/syscalls (name, then the command line).
Each test runs in a fresh temporary directory (its cwd and TMPDIR) with LTP's environment,
once under qemuser-ARCH and once under Debian's qemu-ARCH (the reference), each with a
timeout. The verdict of a test compares the two:

    PASS            both pass (or qemuser passes where qemu-user skips)
    FAIL            qemu-user passes (or skips), qemuser fails
    TIMEOUT         as FAIL, qemuser ran out of time
    both-fail       both fail (or time out): the host or the kernel, not the emulator
    qemu-only-fail  qemuser passes where qemu-user fails
    SKIP            qemuser skips (TCONF) where qemu-user does not pass either
    qemuser-skip    qemuser skips (TCONF) where qemu-user passes: something qemuser lacks
    not-run         listed as unsafe for this host (UNSAFE below), or not built

`--reference SAVED.json` takes qemu-user's runs from an earlier `--json` run of the same LTP
build instead of running them again (the reference does not change between runs of qemuser,
and it halves a run's time); tests the saved run lacks run under both.

LTP's exit status is the OR of what its results were (include/tst_res_flags.h): 0 all
passed, TFAIL 1, TBROK 2, TWARN 4, TCONF 32 (skipped; counted apart, never as a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path

TFAIL, TBROK, TWARN, TCONF = 1, 2, 4, 32
ARCHES = ("aarch64", "riscv64")
VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"

# Tests that would touch this host beyond their temporary directory: block devices (LTP
# attaches a loop device and runs mkfs: `.needs_device`, `.format_device`, `.mount_device`,
# `.all_filesystems`, `.needs_rofs`), mounts, swap, the clock, the host name, kernel modules,
# sysctls they save and restore (a timeout would leave them changed), cgroups, hugepages.
# Generated from LTP's sources (20260529) with:
#   grep -rlE '\.(needs_device|format_device|mount_device|all_filesystems|needs_rofs|
#     needs_devfs)\s*=' testcases/kernel/syscalls   (and save_restore, tst_cg_, hugepages)
# plus the old library's tst_acquire_device users and the name patterns below.
UNSAFE_DEVICE = frozenset(
    """
    access04 acct01 cachestat01 cachestat04 chdir01 chmod06 chmod09 chown04 close_range01
    copy_file_range01 copy_file_range02 creat06 creat09 execveat03 fallocate04 fallocate05
    fallocate06 fanotify01 fanotify03 fanotify05 fanotify06 fanotify09 fanotify10 fanotify13
    fanotify14 fanotify15 fanotify16 fanotify17 fanotify18 fanotify19 fanotify20 fanotify21
    fanotify22 fanotify23 fanotify24 fchmod06 fchmodat2_01 fchown04 fchownat03 fdatasync03
    fgetxattr01 fgetxattr02 file_attr01 file_attr02 file_attr03 file_attr05 fremovexattr01
    fremovexattr02 fsconfig01 fsconfig02 fsconfig03 fsetxattr01 fsetxattr02 fsmount01 fsmount02
    fsopen01 fsopen02 fspick01 fspick02 fstatfs01 fsync01 fsync04 ftruncate04 getdents01
    getdents02 getxattr02 getxattr03 getxattr04 inotify03 inotify07 inotify08 ioctl04 ioctl05
    ioctl06 ioctl08 ioctl_ficlone01 ioctl_ficlone02 ioctl_ficlone03 ioctl_ficlonerange01
    ioctl_ficlonerange02 ioctl_fiemap01 ioctl_getlbmd01 landlock04 landlock05 landlock06
    lchown02 link08 listmount01 listmount02 lremovexattr01 lstat03 mkdir03 mkdir09 mkdirat02
    mknod07 mmap16 mount01 mount02 mount03 mount04 mount05 mount06 mount07 mount_setattr01
    move_mount01 move_mount02 msync04 open11 open12 open14 open_tree01 open_tree02 openat02
    openat04 prctl06 preadv03 preadv203 pwritev03 quotactl01 quotactl02 quotactl03 quotactl04
    quotactl05 quotactl06 quotactl07 quotactl08 quotactl09 readahead02 readdir01 readdir21
    rename01 rename03 rename04 rename05 rename06 rename07 rename08 rename10 rename12 rename13
    rename15 rmdir02 set_mempolicy03 set_mempolicy04 setxattr01 stat04 statfs01 statmount01
    statmount02 statmount04 statmount05 statmount06 statmount07 statmount09 statvfs01 statx01
    statx04 statx05 statx06 statx08 statx09 statx10 statx11 statx12 swapoff01 swapoff02 swapon01
    swapon02 swapon03 sync01 sync_file_range02 syncfs01 umount01 umount02 umount03 umount2_02
    unlink09 unlink10 utime01 utime02 utime03 utime04 utime05 utime06 utimensat01 utimes01
    writev03
    linkat02 mknodat02 renameat01 rename11 statx07 fanotify25 pivot_root01 mlockall02
    """.split()
)
UNSAFE_SYSCTL_CGROUP = frozenset(
    """
    add_key05 bind06 fork13 io_uring01 io_uring02 io_uring03 io_uring04 madvise06 madvise08
    migrate_pages02 move_pages12 msgget03 munmap04 semget05 sendmsg03 sendto03 setsockopt05
    setsockopt06 setsockopt07 setsockopt08 setsockopt09 shmget02 splice06 syslog11 unshare03
    clone303 madvise09 mmap22 process_madvise01 cachestat03 futex_wake04 memfd_create03 pkey01
    """.split()
)
# by name: mounts and namespaces of mounts, swap, reboot, modules, the clock, host identity,
# the terminal, process accounting, the kernel log, host devices (tun, sg, loop)
UNSAFE_PATTERNS = (
    "mount*", "umount*", "fsmount*", "fsopen*", "fsconfig*", "fspick*", "move_mount*",
    "open_tree*", "mount_setattr*", "listmount*", "statmount*", "pivot_root*", "chroot*",
    "swapon*", "swapoff*", "reboot*", "quotactl*", "ioctl_loop*", "ioctl_sg*", "ioctl03",
    "init_module*", "finit_module*", "delete_module*", "acct*", "settimeofday*", "stime*",
    "clock_settime*", "clock_adjtime*", "adjtimex*", "leapsec*", "sethostname*",
    "setdomainname*", "vhangup*", "syslog*", "bpf_*", "perf_event_open*", "umount2_*",
)  # fmt: skip


def unsafe_reason(name: str, program: str) -> str | None:
    """Why the test `name` (running `program`) is not run on this host, or None. The lists
    name sources: a runtest entry may differ (fork06 runs fork_procs), and the 16-bit-uid and
    64-bit-offset twins (chown04_16, fstatfs01_64) build the same source."""
    names = {name, program}
    names |= {n.removesuffix(twin) for n in names for twin in ("_16", "_64")}
    if names & UNSAFE_DEVICE:
        return "needs a block device"
    if names & UNSAFE_SYSCTL_CGROUP:
        return "changes host sysctls, cgroups or hugepages"
    if any(fnmatchcase(n, pattern) for n in names for pattern in UNSAFE_PATTERNS):
        return "changes host-wide state (mounts, swap, clock, modules, devices)"
    return None


@dataclass
class Run:
    """One test under one emulator."""

    kind: str  # pass, conf, fail, timeout, error (could not start)
    status: int | None  # exit status; negative: killed by that signal
    seconds: float
    detail: str = ""  # TFAIL|TBROK..., a signal name, "exit N"
    message: str = ""  # the first TFAIL/TBROK (or TCONF) line LTP printed


@dataclass
class Result:
    name: str
    command: list[str]
    verdict: str
    qemuser: Run | None = None
    qemu: Run | None = None
    reason: str = ""  # for not-run


@dataclass
class Options:
    ltproot: Path
    arch: str
    qemuser: str
    qemu: str
    timeout: float
    timeout_mul: str
    runtime_mul: str
    workdir: Path
    keep: bool
    verbose: bool = False
    # qemu-user's runs of a saved --json run, by test name: reused instead of running the
    # reference again (it does not change between runs of qemuser; --reference)
    reference: dict[str, Run] | None = None


_RESULT_LINE = re.compile(r"\b(TFAIL|TBROK|TWARN)\b")
_CONF_LINE = re.compile(r"\bTCONF\b")


def _first_line(output: str, pattern: re.Pattern[str]) -> str:
    for line in output.splitlines():
        if pattern.search(line):
            return line.strip()[:240]
    return ""


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:240] if lines else ""


def classify(status: int, output: str) -> tuple[str, str, str]:
    """(kind, detail, message) of one finished run."""
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else str(status)
        return "fail", f"killed by {name}", _first_line(output, _RESULT_LINE) or _last_line(output)
    if status == 0:
        return "pass", "", ""
    if status == TCONF:
        return "conf", "TCONF", _first_line(output, _CONF_LINE)
    if status & ~(TFAIL | TBROK | TWARN | TCONF):
        # not LTP's flags: the emulator itself (an error message, an internal error)
        return "fail", f"exit {status}", _last_line(output)
    flags = [
        name for bit, name in ((TFAIL, "TFAIL"), (TBROK, "TBROK"), (TWARN, "TWARN")) if status & bit
    ]
    return "fail", "|".join(flags), _first_line(output, _RESULT_LINE)


def run_one(opts: Options, emulator: str, name: str, command: list[str]) -> Run:
    """Run `command` (the test's argv) under `emulator` in a fresh temporary directory."""
    bindir = opts.ltproot / "testcases" / "bin"
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=opts.workdir))
    env = {
        "PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LTPROOT": str(opts.ltproot),
        "TMPDIR": str(tmp),
        "HOME": str(tmp),
        "LANG": "C",
        "LTP_COLORIZE_OUTPUT": "0",
        "LTP_TIMEOUT_MUL": opts.timeout_mul,
        "LTP_RUNTIME_MUL": opts.runtime_mul,
    }
    # Through a shell that waits for it: the emulator's parent is then that shell, never this
    # runner, which a test's stray kill(getppid(), ...) would otherwise hit (clone02 under
    # qemuser sent SIGUSR2 here). `; exit $?` keeps the shell from exec'ing it in its place.
    argv = ["/bin/sh", "-c", '"$@"; exit $?', "sh", emulator, str(bindir / command[0])]
    argv += command[1:]
    if opts.verbose:
        print(f"start {name} under {emulator}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
    except OSError as exc:
        return Run("error", None, 0.0, "could not start", f"{emulator}: {exc.strerror}")
    try:
        out, _ = proc.communicate(timeout=opts.timeout)
        status: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        out, _ = proc.communicate()
        status = None
    finally:
        _kill_session(proc.pid)  # children left behind (a test that failed half-way)
        if not opts.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = round(time.monotonic() - started, 2)
    text = out.decode(errors="replace")
    if status is None:
        return Run(
            "timeout", None, seconds, f"over {opts.timeout:g} s", _first_line(text, _RESULT_LINE)
        )
    if 128 < status <= 128 + 64:  # the shell's way to say "killed by signal N"
        status = 128 - status
    kind, detail, message = classify(status, text)
    return Run(kind, status, seconds, detail, message)


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid`: LTP puts each test in a process group of its
    own (setpgid in the library), so the group of the process we started is not enough, and
    one left alive would hold the output pipe open."""
    for _ in range(10):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == sid:
                found = True
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if not found:
            return
        time.sleep(0.05)


def verdict(ours: Run, ref: Run) -> str:
    failed = ("fail", "timeout", "error")
    if ours.kind == "pass":
        return "qemu-only-fail" if ref.kind in failed else "PASS"
    if ours.kind == "conf":
        return "qemuser-skip" if ref.kind == "pass" else "SKIP"
    if ref.kind in failed:
        return "both-fail"
    return "TIMEOUT" if ours.kind == "timeout" else "FAIL"


def read_runtest(path: Path) -> list[tuple[str, list[str]]]:
    """(name, argv) of each entry of a runtest file (LTP's format: name, then the command)."""
    tests = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, *command = shlex.split(line)
        if command:
            tests.append((name, command))
    return tests


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def test_one(opts: Options, name: str, command: list[str]) -> Result:
    reason = unsafe_reason(name, command[0])
    binary = opts.ltproot / "testcases" / "bin" / command[0]
    if reason is None and not binary.exists():
        reason = "not built"
    elif reason is None and not is_elf(binary):
        reason = "a script (needs binfmt_misc to run foreign programs)"
    if reason is not None:
        return Result(name, command, "not-run", reason=reason)
    saved = opts.reference.get(name) if opts.reference is not None else None
    ref = saved if saved is not None else run_one(opts, opts.qemu, name, command)
    ours = run_one(opts, opts.qemuser, name, command)
    return Result(name, command, verdict(ours, ref), ours, ref)


def describe(result: Result) -> str:
    if result.verdict == "not-run":
        return f"{result.verdict:14} {result.name}: {result.reason}"
    assert result.qemuser is not None and result.qemu is not None

    def side(run: Run) -> str:
        return run.kind + (f" ({run.detail})" if run.detail and run.kind != "conf" else "")

    ours, ref = result.qemuser, result.qemu
    text = f"{result.verdict:14} {result.name} [qemuser {side(ours)} {ours.seconds}s"
    text += f"; qemu-user {side(ref)} {ref.seconds}s]"
    message = result.qemuser.message if result.verdict not in ("PASS", "qemu-only-fail") else ""
    if result.verdict == "qemu-only-fail":
        message = result.qemu.message
    return text + (f" {message}" if message else "")


def summary(arch: str, results: list[Result]) -> str:
    ran = [r for r in results if r.verdict != "not-run"]

    def count(side: str, kinds: tuple[str, ...]) -> int:
        return sum(1 for r in ran if getattr(r, side).kind in kinds)

    verdicts = {v: sum(1 for r in results if r.verdict == v) for v in (
        "PASS", "FAIL", "TIMEOUT", "both-fail", "qemu-only-fail", "SKIP", "qemuser-skip", "not-run",
    )}  # fmt: skip
    bad = ("fail", "timeout", "error")
    return (
        f"{arch}: qemuser passed {count('qemuser', ('pass',))}, failed {count('qemuser', bad)}; "
        f"qemu-user passed {count('qemu', ('pass',))}, failed {count('qemu', bad)}; "
        f"both-fail {verdicts['both-fail']}; qemu-only-fail {verdicts['qemu-only-fail']}; "
        f"qemuser-only FAIL {verdicts['FAIL']}, TIMEOUT {verdicts['TIMEOUT']}, "
        f"skip {verdicts['qemuser-skip']}; "
        f"skipped (TCONF) qemuser {count('qemuser', ('conf',))}, "
        f"qemu-user {count('qemu', ('conf',))}; "
        f"not run {verdicts['not-run']} (of {len(results)})"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ltp.py", description="LTP syscalls tests under qemuser and qemu-user"
    )
    parser.add_argument("ltproot", type=Path, help="LTP install (testcases/bin, runtest/)")
    parser.add_argument("arch", choices=ARCHES)
    parser.add_argument("-j", "--jobs", type=int, default=2, help="tests run at once (2)")
    parser.add_argument(
        "-k", dest="patterns", action="append", default=[],
        help="run only tests whose name matches this glob (repeatable)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60, help="seconds per run (60)")
    parser.add_argument("--ltp-timeout-mul", default="1", help="LTP_TIMEOUT_MUL (1)")
    parser.add_argument("--ltp-runtime-mul", default="0.25", help="LTP_RUNTIME_MUL (0.25)")
    parser.add_argument("--runtest", default="syscalls", help="runtest file name (syscalls)")
    parser.add_argument("--qemuser", help="qemuser to test (.venv/bin/qemuser-ARCH)")
    parser.add_argument("--qemu", help="reference (qemu-ARCH from PATH)")
    parser.add_argument("--json", type=Path, help="write every result as JSON here")
    parser.add_argument("--report", type=Path, help="write the text report here")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directories")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each start on stderr")
    parser.add_argument(
        "--reference", type=Path, metavar="FILE",
        help="take qemu-user's runs from a saved --json run (same LTP build): run only qemuser",
    )  # fmt: skip
    parser.add_argument(
        "--from-json", type=Path, metavar="FILE",
        help="run nothing: report a saved --json run again (with today's UNSAFE lists)",
    )  # fmt: skip
    return parser.parse_args(argv)


def load_results(path: Path) -> dict[str, Result]:
    results = {}
    for item in json.loads(path.read_text()):
        runs = {side: Run(**item[side]) if item[side] else None for side in ("qemuser", "qemu")}
        results[item["name"]] = Result(
            item["name"], item["command"], item["verdict"], runs["qemuser"], runs["qemu"],
            item["reason"],
        )  # fmt: skip
    return results


def rescore(args: argparse.Namespace, tests: list[tuple[str, list[str]]]) -> int:
    """The report of a saved run, the tests listed unsafe since then counted as not run."""
    saved = load_results(args.from_json)
    results = []
    for name, command in tests:
        result = saved.get(name)
        if result is None:
            continue
        reason = unsafe_reason(name, command[0])
        if reason is not None:
            result = Result(name, command, "not-run", reason=reason)
        results.append(result)
    return report(args, results)


def report(args: argparse.Namespace, results: list[Result]) -> int:
    line = summary(args.arch, results)
    if args.from_json:
        for result in results:
            print(describe(result))
    print(line)
    if args.report:
        args.report.write_text("".join(describe(r) + "\n" for r in results) + line + "\n")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runtest = args.ltproot / "runtest" / args.runtest
    if not runtest.is_file():
        print(
            f"ltp.py: no runtest file {runtest} (is {args.ltproot} an LTP install?)",
            file=sys.stderr,
        )
        return 2
    qemuser = args.qemuser or str(VENV_BIN / f"qemuser-{args.arch}")
    qemu = args.qemu or shutil.which(f"qemu-{args.arch}") or ""
    for what, path in (("qemuser", qemuser), ("qemu-user", qemu)):
        if not path or not os.access(path, os.X_OK):
            print(f"ltp.py: {what} not found ({path or f'qemu-{args.arch}'})", file=sys.stderr)
            return 2
    tests = read_runtest(runtest)
    if args.patterns:
        tests = [t for t in tests if any(fnmatchcase(t[0], p) for p in args.patterns)]
    if args.from_json:
        return rescore(args, tests)
    reference = None
    if args.reference:
        try:
            saved = load_results(args.reference)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"ltp.py: cannot read {args.reference}: {exc}", file=sys.stderr)
            return 2
        reference = {name: r.qemu for name, r in saved.items() if r.qemu is not None}
    workdir = args.workdir or Path(tempfile.gettempdir()) / f"ltp-run-{args.arch}"
    workdir.mkdir(parents=True, exist_ok=True)
    opts = Options(
        ltproot=args.ltproot.resolve(),
        arch=args.arch,
        qemuser=qemuser,
        qemu=qemu,
        timeout=args.timeout,
        timeout_mul=args.ltp_timeout_mul,
        runtime_mul=args.ltp_runtime_mul,
        workdir=workdir,
        keep=args.keep,
        verbose=args.verbose,
        reference=reference,
    )
    results: list[Result] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(test_one, opts, name, command) for name, command in tests]
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                print(describe(result), flush=True)
    except KeyboardInterrupt:
        print("ltp.py: interrupted; the report covers the tests that finished", file=sys.stderr)
    order = {name: i for i, (name, _) in enumerate(tests)}
    results.sort(key=lambda r: order[r.name])
    return report(args, results)


if __name__ == "__main__":
    sys.exit(main())
