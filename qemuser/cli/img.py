"""qemuser-img: qemu-img's command line and output over qemuser's block layer."""

from __future__ import annotations

import getopt
import json
import os
import sys
import time
from collections.abc import Callable

from qemuser.system.block import BlockError, open_image, tools
from qemuser.system.block.driver import BlockDriver
from qemuser.system.block.probe import FORMATS
from qemuser.system.block.qcow2 import Qcow2Image, resolve_backing
from qemuser.system.block.sizes import parse_size, size_to_str
from qemuser.system.qemuopts import split_commas

PROG = "qemuser-img"  # error lines start with our name, as qemu-img's start with its own


class Usage(Exception):
    """A command-line error: one line, then qemu-img's hint about --help."""


class Fail(Exception):
    """An error line (already worded); exit status attached."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def parse_opts(
    args: list[str], short: str, long: list[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    try:
        return getopt.gnu_getopt(args, short, long)
    except getopt.GetoptError as e:
        opt = e.opt
        if "requires argument" in e.msg:
            if len(opt) == 1:
                raise Usage(f"option requires an argument -- '{opt}'") from None
            raise Usage(f"option '--{opt}' requires an argument") from None
        if len(opt) == 1:
            raise Usage(f"invalid option -- '{opt}'") from None
        raise Usage(f"unrecognized option '--{opt}'") from None


def open_img(
    filename: str, fmt: str | None, read_only: bool = True, open_backing: bool = True
) -> BlockDriver:
    if fmt is not None and fmt not in FORMATS:
        raise Fail(f"Could not open '{filename}': Unknown driver '{fmt}'")
    try:
        return open_image(filename, fmt, read_only, open_backing=open_backing)
    except BlockError as e:
        # QEMU prefixes the file again, also when the message already names it
        raise Fail(f"Could not open '{filename}': {e}") from None


# -- -o options -------------------------------------------------------------------------------

QCOW2_OPTIONS = (
    ("backing_file", "str", "File name of a base image"),
    ("backing_fmt", "str", "Image format of the base image"),
    ("cluster_size", "size", "qcow2 cluster size"),
    ("compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"),
    ("compression_type", "str", "Compression method used for image cluster compression"),
    ("extended_l2", "bool (on/off)", "Extended L2 tables"),
    ("lazy_refcounts", "bool (on/off)", "Postpone refcount updates"),
    ("preallocation", "str", "Preallocation mode (allowed values: off, metadata, falloc, full)"),
    ("refcount_bits", "num", "Width of a reference count entry in bits"),
    ("size", "size", "Virtual disk size"),
)
RAW_OPTIONS = (
    ("preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"),
    ("size", "size", "Virtual disk size"),
)
# options QEMU's qcow2 has that this block layer refuses (valid names, unimplemented features)
QCOW2_UNSUPPORTED = (
    "data_file",
    "data_file_raw",
    "encryption",
    "encrypt.format",
    "encrypt.key-secret",
    "encrypt.cipher-alg",
    "encrypt.cipher-mode",
    "encrypt.hash-alg",
    "encrypt.iter-time",
    "encrypt.ivgen-alg",
    "encrypt.ivgen-hash-alg",
)


def options_help(fmt: str) -> str:
    rows = QCOW2_OPTIONS if fmt == "qcow2" else RAW_OPTIONS
    lines = [f"Supported {fmt} options:"]
    for name, kind, text in rows:
        left = f"  {name}=<{kind}>"
        lines.append(f"{left:<24} - {text}")
    lines.append("")
    lines.append("The protocol level may support further options.")
    lines.append("Specify the target filename to include those options.")
    return "\n".join(lines)


def parse_o(text: str, fmt: str, filename: str) -> dict[str, str]:
    """-o a=b,c=d (',,' escapes a comma), checked against the format's options."""
    out: dict[str, str] = {}
    items = split_commas(text)
    names = {n for n, _, _ in (QCOW2_OPTIONS if fmt == "qcow2" else RAW_OPTIONS)}
    for item in items:
        if not item:
            continue
        key, _, value = item.partition("=")
        if fmt == "qcow2" and key in QCOW2_UNSUPPORTED:
            raise Fail(f"{filename}: Parameter '{key}' is not supported by qemuser's qcow2")
        if key not in names:
            raise Fail(f"{filename}: Invalid parameter '{key}'")
        out[key] = value
    return out


def onoff(value: str, key: str, filename: str) -> bool:
    if value in ("on", "yes", "true", ""):
        return True
    if value in ("off", "no", "false"):
        return False
    raise Fail(f"{filename}: Parameter '{key}' expects 'on' or 'off'")


def create_options(fmt: str, o: dict[str, str], filename: str) -> tools.CreateOptions:
    opts = tools.CreateOptions(fmt=fmt, size=None)
    try:
        if "size" in o:
            opts.size = parse_size(o["size"])
        if "cluster_size" in o:
            opts.cluster_size = parse_size(o["cluster_size"])
        if "refcount_bits" in o:
            opts.refcount_bits = int(o["refcount_bits"])
    except (BlockError, ValueError):
        raise Fail(
            f"{filename}: Parameter 'size' expects a non-negative number below 2^64"
        ) from None
    if "compat" in o:
        opts.compat = o["compat"]
        if opts.compat not in ("0.10", "1.1", "v2", "v3"):
            raise Fail(f"{filename}: Parameter 'version' does not accept value '{opts.compat}'")
    if "backing_file" in o:
        opts.backing_file = o["backing_file"]
    if "backing_fmt" in o:
        opts.backing_fmt = o["backing_fmt"]
    if "preallocation" in o:
        opts.preallocation = o["preallocation"]
        allowed = (
            ("off", "metadata", "falloc", "full") if fmt == "qcow2" else ("off", "falloc", "full")
        )
        if opts.preallocation not in allowed:
            raise Fail(
                f"{filename}: Parameter 'preallocation' does not accept value "
                f"'{opts.preallocation}'"
            )
    if "lazy_refcounts" in o:
        opts.lazy_refcounts = onoff(o["lazy_refcounts"], "lazy_refcounts", filename)
    if o.get("extended_l2", "off") not in ("off", "false", "no"):
        raise Fail(f"{filename}: Extended L2 entries are not supported by qemuser's qcow2")
    if o.get("compression_type", "zlib") != "zlib":
        raise Fail(
            f"{filename}: Compression type '{o['compression_type']}' is not supported (only zlib)"
        )
    return opts


def formatting_line(filename: str, opts: tools.CreateOptions, size: int) -> str:
    if opts.fmt == "raw":
        line = f"Formatting '{filename}', fmt=raw size={size}"
        if opts.preallocation != "off":
            line += f" preallocation={opts.preallocation}"
        return line
    parts = [f"cluster_size={opts.cluster_size}", "extended_l2=off"]
    if opts.preallocation != "off":
        parts.append(f"preallocation={opts.preallocation}")
    parts += ["compression_type=zlib", f"size={size}"]
    if opts.compat != "1.1":
        parts.append(f"compat={opts.compat}")
    if opts.backing_file:
        parts.append(f"backing_file={opts.backing_file}")
    if opts.backing_fmt:
        parts.append(f"backing_fmt={opts.backing_fmt}")
    parts += [
        f"lazy_refcounts={'on' if opts.lazy_refcounts else 'off'}",
        f"refcount_bits={opts.refcount_bits}",
    ]
    return f"Formatting '{filename}', fmt=qcow2 " + " ".join(parts)


# -- subcommands --------------------------------------------------------------------------------


def cmd_create(args: list[str]) -> int:
    opts_list, rest = parse_opts(args, "F:b:f:ho:qu", ["help", "object="])
    fmt = "raw"
    backing = backing_fmt = None
    o_text: list[str] = []
    quiet = unsafe = False
    for opt, val in opts_list:
        if opt == "-f":
            fmt = val
        elif opt == "-b":
            backing = val
        elif opt == "-F":
            backing_fmt = val
        elif opt == "-o":
            o_text.append(val)
        elif opt == "-q":
            quiet = True
        elif opt == "-u":
            unsafe = True
        elif opt == "--object":
            raise Fail("--object is not supported by qemuser-img")
    if fmt not in FORMATS:
        raise Fail(f"Unknown file format '{fmt}'")
    if any(t == "help" or t.startswith("help,") for t in o_text):
        print(options_help(fmt))
        return 0
    if not rest:
        raise Usage("Expecting image file name")
    filename = rest[0]
    o: dict[str, str] = {}
    for t in o_text:
        o.update(parse_o(t, fmt, filename))
    opts = create_options(fmt, o, filename)
    if backing is not None:
        opts.backing_file = backing
    if backing_fmt is not None:
        opts.backing_fmt = backing_fmt
    if len(rest) > 2:
        raise Usage("Unexpected argument: " + rest[2])
    if len(rest) == 2:
        try:
            size = parse_size(rest[1])
        except BlockError:
            err("Invalid image size specified. You may use k, M, G, T, P or E suffixes for")
            err("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
            return 1
        opts.size = size
    if opts.backing_file and fmt == "qcow2" and not opts.backing_fmt:
        raise Fail(f"{filename}: Backing file specified without backing format")
    if opts.backing_file and fmt == "qcow2" and opts.size is None:
        path = resolve_backing(filename, opts.backing_file)
        try:
            with open_image(path, opts.backing_fmt or None, True, warn=False) as b:
                opts.size = b.size()
        except BlockError as e:
            raise Fail(f"{filename}: Could not open '{path}': {e}") from None
    if opts.size is None:
        raise Fail(f"{filename}: Image creation needs a size parameter")
    if not quiet:
        print(formatting_line(filename, opts, opts.size))
        sys.stdout.flush()
    del unsafe  # we never open the backing file for more than its size
    try:
        tools.create(filename, opts)
    except BlockError as e:
        raise Fail(f"{filename}: {e}") from None
    return 0


def _qdict_bucket(key: str) -> int:
    """The bucket of QEMU's QDict (tdb_hash % 512) a key falls in: QEMU prints in that order."""
    raw = key.encode()
    value = (0x238F13AF * len(raw)) & 0xFFFFFFFF
    for i, c in enumerate(raw):
        value = (value + (c << (i * 5 % 24))) & 0xFFFFFFFF
    return ((1103515243 * value + 12345) & 0xFFFFFFFF) % 512


def qemu_order(obj: object) -> object:
    """Dicts reordered as QEMU's QDict iterates them (its JSON output's order)."""
    if isinstance(obj, dict):
        return {k: qemu_order(obj[k]) for k in sorted(obj, key=_qdict_bucket)}
    if isinstance(obj, list):
        return [qemu_order(x) for x in obj]
    return obj


def qemu_json(obj: object) -> str:
    return json.dumps(qemu_order(obj), indent=4)


def _output_fmt(val: str) -> str:
    if val not in ("human", "json"):
        raise Fail("--output must be used with human or json as argument.")
    return val


def image_info(img: BlockDriver) -> dict[str, object]:
    """qemu-img info's fields, in its JSON order."""
    info: dict[str, object] = {}
    if isinstance(img, Qcow2Image) and img.snapshots:
        info["snapshots"] = [snapshot_json(s) for s in img.snapshots]
    if isinstance(img, Qcow2Image) and img.backing_filename and img.backing_format:
        info["backing-filename-format"] = img.backing_format
    info["virtual-size"] = img.size()
    info["filename"] = img.filename
    if img.cluster_size():
        info["cluster-size"] = img.cluster_size()
    info["format"] = img.format_name
    info["actual-size"] = img.disk_usage()
    spec = img.info_specific()
    if spec is not None:
        info["format-specific"] = {"type": img.format_name, "data": spec}
    if isinstance(img, Qcow2Image) and img.backing_filename:
        info["full-backing-filename"] = resolve_backing(img.filename, img.backing_filename)
        info["backing-filename"] = img.backing_filename
    dirty = isinstance(img, Qcow2Image) and bool(img.incompatible & 1)
    info["dirty-flag"] = dirty
    return info


def snapshot_json(s: object) -> dict[str, object]:
    return {
        "icount": s.icount if s.icount is not None else -1,  # type: ignore[attr-defined]
        "vm-clock-nsec": s.vm_clock_nsec % 10**9,  # type: ignore[attr-defined]
        "name": s.name,  # type: ignore[attr-defined]
        "date-sec": s.date_sec,  # type: ignore[attr-defined]
        "date-nsec": s.date_nsec,  # type: ignore[attr-defined]
        "vm-clock-sec": s.vm_clock_nsec // 10**9,  # type: ignore[attr-defined]
        "id": s.id,  # type: ignore[attr-defined]
        "vm-state-size": s.vm_state_size,  # type: ignore[attr-defined]
    }


def snapshot_lines(img: Qcow2Image) -> list[str]:
    row = "%-10s%-17s%8s%20s%13s%11s"  # QEMU's printf format
    lines = [row % ("ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")]  # noqa: UP031
    for s in img.snapshots:
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.date_sec))
        ns = s.vm_clock_nsec
        secs = ns // 10**9
        clock = "%02d:%02d:%02d.%03d" % (  # noqa: UP031 (QEMU's printf format)
            secs // 3600,
            secs // 60 % 60,
            secs % 60,
            ns // 10**6 % 1000,
        )
        icount = "" if s.icount is None else str(s.icount)
        lines.append(
            "%-10s%-17s%8s%20s%13s%11s"  # noqa: UP031 (QEMU's printf format)
            % (s.id, s.name, size_to_str(s.vm_state_size), date, clock, icount)
        )
    return lines


def human_info(img: BlockDriver) -> str:
    info = image_info(img)
    lines = [
        f"image: {img.filename}",
        f"file format: {img.format_name}",
        f"virtual size: {size_to_str(img.size())} ({img.size()} bytes)",
        f"disk size: {size_to_str(img.disk_usage())}",
    ]
    if img.cluster_size():
        lines.append(f"cluster_size: {img.cluster_size()}")
    if info["dirty-flag"]:
        lines.append("cleanly shut down: no")
    if "backing-filename" in info:
        full = info["full-backing-filename"]
        name = info["backing-filename"]
        lines.append(f"backing file: {name}" + (f" (actual path: {full})" if full != name else ""))
        if "backing-filename-format" in info:
            lines.append(f"backing file format: {info['backing-filename-format']}")
    if isinstance(img, Qcow2Image) and img.snapshots:
        lines.append("Snapshot list:")
        lines += snapshot_lines(img)
    spec = img.info_specific()
    if spec:
        lines.append("Format specific information:")
        for k, v in spec.items():
            text = ("true" if v else "false") if isinstance(v, bool) else str(v)
            lines.append(f"    {k.replace('-', ' ')}: {text}")
    return "\n".join(lines)


def cmd_info(args: list[str]) -> int:
    opts, rest = parse_opts(
        args, "f:hU", ["help", "output=", "backing-chain", "force-share", "image-opts", "object="]
    )
    fmt = None
    output = "human"
    backing_chain = False
    for opt, val in opts:
        if opt == "-f":
            fmt = val
        elif opt == "--output":
            output = _output_fmt(val)
        elif opt == "--backing-chain":
            backing_chain = True
        elif opt in ("--image-opts", "--object"):
            raise Fail(f"{opt} is not supported by qemuser-img")
    if len(rest) != 1:
        raise Usage("Expecting one image file name")
    # like QEMU, plain info does not need the backing file to exist
    img = open_img(rest[0], fmt, open_backing=backing_chain)
    with img:
        layers = tools.chain(img) if backing_chain else [img]
        if output == "json":
            data = [image_info(x) for x in layers]
            print(qemu_json(data if backing_chain else data[0]))
        else:
            print("\n\n".join(human_info(x) for x in layers))
    return 0


def check_lines(res: object, filename: str, fmt: str, output: str) -> str:
    r = res  # a CheckResult
    if output == "json":
        data: dict[str, object] = {
            "image-end-offset": r.image_end_offset,  # type: ignore
            "total-clusters": r.total_clusters,
        }  # type: ignore
        data["check-errors"] = r.check_errors  # type: ignore
        if r.leaks:  # type: ignore
            data["leaks"] = r.leaks  # type: ignore
        if r.corruptions:  # type: ignore
            data["corruptions"] = r.corruptions  # type: ignore
        if r.leaks_fixed:  # type: ignore
            data["leaks-fixed"] = r.leaks_fixed  # type: ignore
        if r.corruptions_fixed:  # type: ignore
            data["corruptions-fixed"] = r.corruptions_fixed  # type: ignore
        data["allocated-clusters"] = r.allocated_clusters  # type: ignore
        if r.fragmented_clusters:  # type: ignore
            data["fragmented-clusters"] = r.fragmented_clusters  # type: ignore
        if r.compressed_clusters:  # type: ignore
            data["compressed-clusters"] = r.compressed_clusters  # type: ignore
        data["filename"] = filename
        data["format"] = fmt
        return qemu_json(data)
    out = []
    if not (r.corruptions or r.leaks or r.check_errors):  # type: ignore
        out.append("No errors were found on the image.")
    else:
        if r.corruptions:  # type: ignore
            out.append(
                f"\n{r.corruptions} errors were found on the image.\n"  # type: ignore
                "Data may be corrupted, or further writes to the image may corrupt it."
            )
        if r.leaks:  # type: ignore
            out.append(
                f"\n{r.leaks} leaked clusters were found on the image.\n"  # type: ignore
                "This means waste of disk space, but no harm to data."
            )
    t = r.total_clusters or 1  # type: ignore
    if r.total_clusters and r.allocated_clusters:  # type: ignore
        out.append(
            "%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters"  # noqa: UP031 (QEMU's printf format)
            % (
                r.allocated_clusters,
                r.total_clusters,
                r.allocated_clusters * 100.0 / t,  # type: ignore
                r.fragmented_clusters * 100.0 / r.allocated_clusters,  # type: ignore
                r.compressed_clusters * 100.0 / r.allocated_clusters,
            )
        )  # type: ignore
    out.append(f"Image end offset: {r.image_end_offset}")  # type: ignore
    return "\n".join(out)


def cmd_check(args: list[str]) -> int:
    opts, rest = parse_opts(
        args, "f:hqr:TU", ["help", "output=", "repair=", "force-share", "image-opts", "object="]
    )
    fmt = None
    output = "human"
    repair = None
    quiet = False
    for opt, val in opts:
        if opt == "-f":
            fmt = val
        elif opt == "--output":
            output = _output_fmt(val)
        elif opt in ("-r", "--repair"):
            if val not in ("leaks", "all"):
                raise Fail("Unknown option value for -r (expecting 'leaks' or 'all'): " + val)
            repair = val
        elif opt == "-q":
            quiet = True
        elif opt in ("--image-opts", "--object"):
            raise Fail(f"{opt} is not supported by qemuser-img")
    if len(rest) != 1:
        raise Usage("Expecting one image file name")
    img = open_img(rest[0], fmt, read_only=repair is None, open_backing=False)
    with img:
        if not isinstance(img, Qcow2Image):
            raise Fail("This image format does not support checks", 63)
        try:
            res = img.check(repair=repair)
        except BlockError as e:
            raise Fail(f"Check failed: {e}") from None
        if output == "human":
            for m in res.messages:
                print(m, file=sys.stderr)
        if repair and (res.leaks_fixed or res.corruptions_fixed):
            if output == "human" and not quiet:
                print(
                    "The following inconsistencies were found and repaired:\n\n"
                    f"    {res.leaks_fixed} leaked clusters\n"
                    f"    {res.corruptions_fixed} corruptions\n\n"
                    "Double checking the fixed image now..."
                )
            fixed_leaks, fixed_corr = res.leaks_fixed, res.corruptions_fixed
            res = img.check()
            res.leaks_fixed, res.corruptions_fixed = fixed_leaks, fixed_corr
            if output == "human":
                for m in res.messages:
                    print(m, file=sys.stderr)
        if not quiet:
            print(check_lines(res, rest[0], img.format_name, output))
    if res.corruptions:
        return 2
    if res.leaks:
        return 3
    return 0


class Progress:
    """qemu-img -p: '    (NN.NN/100%)' lines ending in a carriage return, on stdout."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = -100.0
        self.report(0.0)

    def report(self, value: float) -> None:
        if not self.enabled:
            return
        if value - self.last >= 1.0 or (value >= 100.0 > self.last):
            self.last = value
            sys.stdout.write(f"    ({value:3.2f}/100%)\r")
            sys.stdout.flush()

    def end(self) -> None:
        if self.enabled:
            self.report(100.0)
            sys.stdout.write("    (100.00/100%)\r\n")
            sys.stdout.flush()


def cmd_convert(args: list[str]) -> int:
    opts, rest = parse_opts(
        args,
        "hf:O:B:Cco:l:S:pt:T:qnm:WUr:F:",
        [
            "help",
            "object=",
            "image-opts",
            "target-image-opts",
            "force-share",
            "salvage",
            "target-is-zero",
            "bitmaps",
            "skip-broken-bitmaps",
        ],
    )
    fmt = None
    out_fmt = "raw"
    out_backing = None
    out_backing_fmt = None
    compress = progress = quiet = no_create = False
    cache = "unsafe"  # qemu-img convert's default: no flush at the end
    o_text: list[str] = []
    for opt, val in opts:
        if opt == "-f":
            fmt = val
        elif opt == "-O":
            out_fmt = val
        elif opt == "-B":
            out_backing = val
        elif opt == "-F":
            out_backing_fmt = val
        elif opt == "-c":
            compress = True
        elif opt == "-p":
            progress = True
        elif opt == "-q":
            quiet = True
        elif opt == "-n":
            no_create = True
        elif opt == "-o":
            o_text.append(val)
        elif opt == "-t":
            if val not in ("none", "writeback", "writethrough", "directsync", "unsafe"):
                raise Fail(f"Invalid cache option: {val}")
            cache = val
        elif opt in ("-S", "-m", "-T", "-W", "-U", "-C", "-r"):
            pass  # tuning of QEMU's copy loop (sparseness, parallelism, caching): no effect here
        elif opt in (
            "-l",
            "--object",
            "--image-opts",
            "--target-image-opts",
            "--salvage",
            "--target-is-zero",
            "--bitmaps",
            "--skip-broken-bitmaps",
        ):
            raise Fail(f"option '{opt}' is not supported by qemuser-img")
    if out_fmt not in FORMATS:
        raise Fail(f"Unknown file format '{out_fmt}'")
    if any(t == "help" for t in o_text):
        print(options_help(out_fmt))
        return 0
    if len(rest) < 2:
        raise Usage("Expecting image file name")
    *inputs, output = rest
    if compress and out_fmt != "qcow2":
        raise Fail("Compression not supported for this file format")
    o: dict[str, str] = {}
    for t in o_text:
        o.update(parse_o(t, out_fmt, output))
    copts = create_options(out_fmt, o, output)
    if out_backing:
        if out_fmt != "qcow2":
            raise Fail("Backing file not supported for file format '" + out_fmt + "'")
        copts.backing_file = out_backing
        copts.backing_fmt = out_backing_fmt or copts.backing_fmt
    sources = []
    try:
        for name in inputs:
            sources.append(open_img(name, fmt))
        total = sum(s.size() for s in sources)
        if not no_create:
            copts.size = total
            if copts.backing_file and not copts.backing_fmt:
                try:
                    from qemuser.system.block.probe import probe

                    copts.backing_fmt = probe(resolve_backing(output, copts.backing_file))
                except BlockError:
                    pass
            try:
                tools.create(output, copts)
            except BlockError as e:
                raise Fail(f"{output}: error while converting {out_fmt}: {e}") from None
        target = open_img(output, out_fmt, read_only=False)
        with target:
            if no_create and target.size() < total:
                raise Fail("Output image is too small")
            bar = Progress(progress and not quiet)
            try:
                tools.convert(
                    sources,
                    target,
                    compress=compress,
                    progress=bar.report,
                    skip_unallocated_target=not no_create,
                    flush=cache != "unsafe",
                )
            except BlockError as e:
                raise Fail(f"error while writing at byte 0: {e}") from None
            bar.end()
    finally:
        for s in sources:
            s.close()
    return 0


def cmd_compare(args: list[str]) -> int:
    opts, rest = parse_opts(args, "hf:F:T:pqsU", ["help", "object=", "image-opts", "force-share"])
    f1 = f2 = None
    strict = quiet = progress = False
    for opt, val in opts:
        if opt == "-f":
            f1 = val
        elif opt == "-F":
            f2 = val
        elif opt == "-s":
            strict = True
        elif opt == "-q":
            quiet = True
        elif opt == "-p":
            progress = True
    if len(rest) != 2:
        raise Usage("Expecting two image file names")
    try:
        a = open_img(rest[0], f1)
        try:
            b = open_img(rest[1], f2 if f2 is not None else f1)
        except Fail:
            a.close()
            raise
    except Fail as e:
        raise Fail(str(e), 2) from None
    with a, b:
        bar = Progress(progress and not quiet)
        try:
            status, message = tools.compare(a, b, strict)
        except BlockError as e:
            raise Fail(f"Error while reading: {e}", 2) from None
        bar.end()
        if a.size() != b.size() and not strict and not quiet:
            print("Warning: Image size mismatch!")
        if not quiet:
            print(message)
    return status


def cmd_resize(args: list[str]) -> int:
    # like qemu-img, the size is taken off the end first, so that '-1M' is no option
    if not args:
        raise Usage("Expecting image file name and size")
    size_arg = args[-1]
    opts, rest = parse_opts(
        args[:-1], "f:hq", ["help", "shrink", "preallocation=", "object=", "image-opts"]
    )
    rest = [a for a in rest if a != "--"] + [size_arg]
    fmt = None
    shrink = quiet = False
    for opt, val in opts:
        if opt == "-f":
            fmt = val
        elif opt == "--shrink":
            shrink = True
        elif opt == "-q":
            quiet = True
        elif opt == "--preallocation":
            if val != "off":
                raise Fail(f"Preallocation mode '{val}' is not supported by qemuser-img resize")
    if len(rest) != 2:
        raise Usage("Expecting image file name and size")
    filename, text = rest
    relative = 0
    if text[:1] in "+-":
        relative = 1 if text[0] == "+" else -1
        text = text[1:]
    try:
        amount = parse_size(text)
    except BlockError:
        raise Fail(
            "Invalid image size specified. Must be between 0 and 9223372036854775807."
        ) from None
    img = open_img(filename, fmt, read_only=False)
    with img:
        old = img.size()
        new = old + relative * amount if relative else amount
        if new < 0:
            raise Fail("New image size must be positive")
        if new < old and not shrink:
            raise Fail("Use the --shrink option to perform a shrink operation.")
        if new < old:
            err(
                "warning: Shrinking an image will delete all data beyond the shrunken image's "
                "end. Before performing such an operation, make sure there is no important "
                "data there."
            )
        try:
            img.truncate(new, shrink=new < old)
        except BlockError as e:
            raise Fail(f"Error resizing image: {e}") from None
        img.flush()
    if not quiet:
        print("Image resized.")
    return 0


def cmd_snapshot(args: list[str]) -> int:
    opts, rest = parse_opts(args, "la:c:d:hqU", ["help", "object=", "image-opts", "force-share"])
    action = None
    name = ""
    quiet = False
    for opt, val in opts:
        if opt in ("-l", "-a", "-c", "-d"):
            if action is not None:
                raise Usage("Cannot mix '-l', '-a', '-c', '-d'")
            action, name = opt, val
        elif opt == "-q":
            quiet = True
    if len(rest) != 1:
        raise Usage("Expecting one image file name")
    action = action or "-l"
    img = open_img(rest[0], None, read_only=action == "-l", open_backing=False)
    with img:
        if not isinstance(img, Qcow2Image):
            what = {"-l": "list", "-c": "create", "-a": "apply", "-d": "delete"}[action]
            if action == "-l":
                return 0
            raise Fail(f"Could not {what} snapshot '{name}': Operation not supported")
        try:
            if action == "-l":
                if img.snapshots and not quiet:
                    print("Snapshot list:")
                    print("\n".join(snapshot_lines(img)))
            elif action == "-c":
                img.snapshot_create(name)
            elif action == "-a":
                img.snapshot_apply(name)
            else:
                img.snapshot_delete(name)
        except BlockError as e:
            what = {"-c": "create", "-a": "apply", "-d": "delete"}[action]
            raise Fail(f"Could not {what} snapshot '{name}': {e}") from None
        img.flush()
    return 0


def _hex(v: int) -> str:
    return "0" if v == 0 else f"{v:#x}"


def cmd_map(args: list[str]) -> int:
    opts, rest = parse_opts(
        args,
        "f:hs:l:U",
        ["help", "output=", "start-offset=", "max-length=", "force-share", "object=", "image-opts"],
    )
    fmt = None
    output = "human"
    start = 0
    length = None
    for opt, val in opts:
        if opt == "-f":
            fmt = val
        elif opt == "--output":
            output = _output_fmt(val)
        elif opt in ("-s", "--start-offset"):
            start = parse_size(val)
        elif opt in ("-l", "--max-length"):
            length = parse_size(val)
    if len(rest) != 1:
        raise Usage("Expecting one image file name")
    img = open_img(rest[0], fmt)
    with img:
        size = img.size()
        start = min(start, size)
        n = size - start if length is None else min(length, size - start)
        try:
            entries = tools.chain_map(img, start, n)
        except BlockError as e:
            raise Fail(f"Could not read image metadata: {e}") from None
        if output == "json":
            lines = []
            for e in entries:
                text = (
                    f'{{ "start": {e.start}, "length": {e.length}, "depth": {e.depth}, '
                    f'"present": {json.dumps(e.present)}, "zero": {json.dumps(e.zero)}, '
                    f'"data": {json.dumps(e.data)}'
                )
                if e.offset is not None:
                    text += f', "offset": {e.offset}'
                lines.append(text + "}")
            print("[" + ",\n".join(lines) + "]")
        else:
            print("%-16s%-16s%-16s%s" % ("Offset", "Length", "Mapped to", "File"))  # noqa: UP031 (QEMU's printf format)
            for e in entries:
                if e.data and e.offset is None:
                    # QEMU's human map can only name offsets: it stops at compressed clusters
                    sys.stdout.flush()
                    raise Fail("File contains external, encrypted or compressed clusters.")
                if e.data and e.offset is not None:
                    print(
                        "%-16s%-16s%-16s%s"  # noqa: UP031 (QEMU's printf format)
                        % (_hex(e.start), _hex(e.length), _hex(e.offset), e.filename)
                    )
    return 0


def cmd_rebase(args: list[str]) -> int:
    opts, rest = parse_opts(
        args, "hf:F:b:upt:T:qU", ["help", "object=", "image-opts", "force-share"]
    )
    fmt = None
    backing = None
    backing_fmt = ""
    unsafe = progress = quiet = False
    for opt, val in opts:
        if opt == "-f":
            fmt = val
        elif opt == "-b":
            backing = val
        elif opt == "-F":
            backing_fmt = val
        elif opt == "-u":
            unsafe = True
        elif opt == "-p":
            progress = True
        elif opt == "-q":
            quiet = True
    if len(rest) != 1:
        raise Usage("Expecting one image file name")
    if backing is None:
        raise Fail("Must specify backing file (-b) or use unsafe mode (-u)")
    if backing and not backing_fmt:
        try:
            from qemuser.system.block.probe import probe

            backing_fmt = probe(resolve_backing(rest[0], backing))
        except BlockError:
            if not unsafe:
                raise Fail(f"Could not open new backing file '{backing}'") from None
    img = open_img(rest[0], fmt, read_only=False, open_backing=not unsafe)
    with img:
        if not isinstance(img, Qcow2Image):
            raise Fail(
                "Could not change the backing file to '" + backing + "': Operation not supported"
            )
        bar = Progress(progress and not quiet)
        try:
            tools.rebase(img, backing, backing_fmt, unsafe, progress=bar.report)
        except BlockError as e:
            raise Fail(str(e)) from None
        bar.end()
        img.flush()
    return 0


def cmd_commit(args: list[str]) -> int:
    opts, rest = parse_opts(args, "f:ht:b:dpqr:", ["help", "object=", "image-opts"])
    fmt = None
    base_name = None
    drop = True
    progress = quiet = False
    for opt, val in opts:
        if opt == "-f":
            fmt = val
        elif opt == "-b":
            base_name = val
            drop = False  # QEMU: -b implies -d
        elif opt == "-d":
            drop = False
        elif opt == "-p":
            progress = True
        elif opt == "-q":
            quiet = True
    if len(rest) != 1:
        raise Usage("Expecting one image file name")
    img = open_img(rest[0], fmt, read_only=False, open_backing=False)
    with img:
        if not isinstance(img, Qcow2Image) or not img.backing_filename:
            raise Fail("Image does not have a backing file")
        # the chain, the backing files writable down to the base
        path = resolve_backing(img.filename, img.backing_filename)
        base = None
        layer: BlockDriver = img
        try:
            while True:
                nxt = open_image(
                    path,
                    getattr(layer, "backing_format", "") or None,
                    read_only=False,
                    open_backing=False,
                    warn=False,
                )
                layer.backing = nxt
                layer = nxt
                if (
                    base_name is None
                    or os.path.realpath(path)
                    == os.path.realpath(resolve_backing(rest[0], base_name))
                    or base_name == path
                ):
                    base = nxt
                    break
                if not isinstance(nxt, Qcow2Image) or not nxt.backing_filename:
                    break
                path = resolve_backing(nxt.filename, nxt.backing_filename)
        except BlockError as e:
            raise Fail(f"Could not open backing file: {e}") from None
        if base is None:
            raise Fail(f"Did not find '{base_name}' in the backing chain of '{rest[0]}'")
        if isinstance(base, Qcow2Image) and base.backing_filename:
            base._open_backing(frozenset())
        bar = Progress(progress and not quiet)
        try:
            tools.commit(img, base, drop=drop, progress=bar.report)
        except BlockError as e:
            raise Fail(f"Block job failed: {e}") from None
        bar.end()
    if not quiet:
        print("Image committed.")
    return 0


def cmd_amend(args: list[str]) -> int:
    opts, rest = parse_opts(args, "ho:f:t:pqU", ["help", "object=", "image-opts", "force"])
    fmt = None
    o_text: list[str] = []
    for opt, val in opts:
        if opt == "-f":
            fmt = val
        elif opt == "-o":
            o_text.append(val)
    if any(t == "help" for t in o_text):
        print(options_help(fmt or "qcow2"))
        return 0
    if not o_text:
        raise Usage("Must specify options (-o)")
    if len(rest) != 1:
        raise Usage("Expecting one image file name")
    img = open_img(rest[0], fmt, read_only=False)
    with img:
        if not isinstance(img, Qcow2Image):
            raise Fail(f"Format driver '{img.format_name}' does not support option amendment")
        o: dict[str, str] = {}
        for t in o_text:
            o.update(parse_o(t, "qcow2", rest[0]))
        version = None
        if "compat" in o:
            if o["compat"] not in ("0.10", "1.1", "v2", "v3"):
                raise Fail(f"Invalid compatibility level: '{o['compat']}'")
            version = 2 if o["compat"] in ("0.10", "v2") else 3
        lazy = (
            onoff(o["lazy_refcounts"], "lazy_refcounts", rest[0]) if "lazy_refcounts" in o else None
        )
        for key in ("cluster_size", "preallocation", "refcount_bits", "compression_type"):
            if key in o:
                raise Fail(f"Changing the {key.replace('_', ' ')} is not supported")
        if version == 2 and (img.version == 3):
            if img.compatible & 1 and lazy is not False:
                raise Fail(
                    "Lazy refcounts only supported with compatibility level 1.1 and above "
                    "(use compat=1.1 or greater)"
                )
            if img.rc_bits != 16:
                raise Fail(
                    "Different refcount widths than 16 bits require compatibility level "
                    "1.1 or above (use compat=1.1 or greater)"
                )
            for e in tools.chain_map(img):
                if e.depth == 0 and e.zero and e.present:
                    raise Fail(
                        "Cannot downgrade an image with zero clusters "
                        "(not supported by qemuser-img)"
                    )
        if lazy and (version or img.version) < 3:
            raise Fail(
                "Lazy refcounts only supported with compatibility level 1.1 and above "
                "(use compat=1.1 or greater)"
            )
        try:
            if "size" in o:
                img.truncate(parse_size(o["size"]))
            img.rewrite_header(
                backing_file=o.get("backing_file"),
                backing_format=o.get("backing_fmt"),
                version=version,
                lazy_refcounts=lazy,
            )
        except BlockError as e:
            raise Fail(f"Error while amending options: {e}") from None
        img.flush()
    return 0


def cmd_measure(args: list[str]) -> int:
    opts, rest = parse_opts(
        args, "hf:O:o:l:U", ["help", "output=", "size=", "object=", "image-opts", "force-share"]
    )
    fmt = None
    out_fmt = "raw"
    output = "human"
    size = None
    o_text: list[str] = []
    for opt, val in opts:
        if opt == "-f":
            fmt = val
        elif opt == "-O":
            out_fmt = val
        elif opt == "-o":
            o_text.append(val)
        elif opt == "--output":
            output = _output_fmt(val)
        elif opt == "--size":
            try:
                size = parse_size(val)
            except BlockError:
                raise Fail(
                    "Invalid image size specified. Must be between 0 and 9223372036854775807."
                ) from None
    if out_fmt not in FORMATS:
        raise Fail(f"Unknown file format '{out_fmt}'")
    if size is not None and rest:
        raise Fail("--size N cannot be used together with a filename.")
    if size is None and len(rest) != 1:
        raise Fail("Either --size N or one filename must be specified.")
    o: dict[str, str] = {}
    for t in o_text:
        o.update(parse_o(t, out_fmt, rest[0] if rest else ""))
    copts = create_options(out_fmt, o, "")
    src = open_img(rest[0], fmt) if rest else None
    try:
        required, full = tools.measure(src, size, out_fmt, copts)
        bitmaps = isinstance(src, Qcow2Image) and out_fmt == "qcow2"
    finally:
        if src is not None:
            src.close()
    if output == "json":
        data: dict[str, int] = {}
        if bitmaps:
            data["bitmaps"] = 0
        data["required"] = required
        data["fully-allocated"] = full
        print(qemu_json(data))
    else:
        print(f"required size: {required}")
        print(f"fully allocated size: {full}")
        if bitmaps:
            print("bitmaps size: 0")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "amend": cmd_amend,
    "check": cmd_check,
    "commit": cmd_commit,
    "compare": cmd_compare,
    "convert": cmd_convert,
    "create": cmd_create,
    "info": cmd_info,
    "map": cmd_map,
    "measure": cmd_measure,
    "rebase": cmd_rebase,
    "resize": cmd_resize,
    "snapshot": cmd_snapshot,
}

HELP = """qemu-img version 7.2.0 (qemuser), a Python re-creation of qemu-img
usage: qemu-img [standard options] command [command options]
QEMU disk image utility

    '-h', '--help'       display this help and exit
    '-V', '--version'    output version information and exit

Command syntax:
  amend [-f fmt] -o options filename
  check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] filename
  commit [-q] [-f fmt] [-b base] [-d] [-p] filename
  compare [-f fmt] [-F fmt] [-p] [-q] [-s] filename1 filename2
  convert [-c] [-p] [-q] [-n] [-f fmt] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] filename [filename2 [...]] output_filename
  create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
  info [-f fmt] [--output=ofmt] [--backing-chain] filename
  map [--output=ofmt] [-f fmt] [--start-offset=offset] [--max-length=len] filename
  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] filename]
  snapshot [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename
  rebase [-q] [-f fmt] [-p] [-u] -b backing_file [-F backing_fmt] filename
  resize [-f fmt] [-q] [--shrink] filename [+ | -]size

Supported formats: qcow2 raw"""  # noqa: E501


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if not args:
            raise Usage("Not enough arguments")
        if args[0] in ("-h", "--help"):
            print(HELP)
            return 0
        if args[0] in ("-V", "--version"):
            print("qemu-img version 7.2.0 (qemuser)")
            return 0
        cmd = COMMANDS.get(args[0])
        if cmd is None:
            if args[0].startswith("-"):
                raise Usage(f"unrecognized option '{args[0]}'")
            raise Usage(f"Command not found: {args[0]}")
        if "-h" in args[1:] or "--help" in args[1:]:
            print(HELP)
            return 0
        return cmd(args[1:])
    except Usage as e:
        err(str(e))
        print(f"Try '{PROG} --help' for more information", file=sys.stderr)
        return 1
    except Fail as e:
        err(str(e))
        return e.status
    except BlockError as e:
        err(str(e))
        return 1
    except OSError as e:  # a host failure outside the block layer (creating a file, ...)
        err(os.strerror(e.errno) if e.errno else str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
