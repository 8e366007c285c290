"""The "gcc" workload of benchmarks/run.py: Debian's arm64 gcc-12 compiling a C file of ~2,000
lines inside a root of Debian arm64 packages (fetched once into cache/debian-arm64-gcc-root, the
way tests/real fetches its root).

gcc is a driver: it starts cc1 (the compiler) and as (the assembler) as foreign child processes,
so the workload measures translation of a large program (cc1 is ~30 MB of code) and foreign
fork+exec, as a real build does. Both sides compile the same generated source with the same
flags; the workload prints the SHA-256 of the object file, which must be the same on both sides.
"""

from __future__ import annotations

from pathlib import Path

from tests.real.debroot import ensure_root

# gcc-12 with what `gcc -c` needs: the driver, cc1 (cpp-12), gcc's own headers (libgcc-12-dev),
# the assembler (binutils) and libc's headers, and the libraries these link against.
GCC_PACKAGES = (
    "gcc-12",
    "gcc-12-base",
    "cpp-12",
    "libgcc-12-dev",
    "binutils-aarch64-linux-gnu",
    "binutils-common",
    "libbinutils",
    "libctf-nobfd0",
    "libctf0",
    "libgprofng0",
    "libjansson4",
    "libc6",
    "libc6-dev",
    "linux-libc-dev",
    "libcrypt-dev",
    "libcrypt1",
    "libisl23",
    "libmpc3",
    "libmpfr6",
    "libgmp10",
    "libzstd1",
    "zlib1g",
    "libstdc++6",
    "libgcc-s1",
    "bash",
    "libtinfo6",
    "coreutils",
    "libacl1",
    "libattr1",
    "libselinux1",
    "libpcre2-8-0",
)
FUNCTIONS = 120  # ~17 lines each: ~2,000 lines of C


def generated_source() -> str:
    """A deterministic C file of ~2,000 lines: structs, loops, switches, arithmetic, calls (so
    that cc1's optimiser has real work at -O2)."""
    lines = [
        "#include <stdint.h>",
        "#include <stdio.h>",
        "#include <string.h>",
        "",
        "struct item { uint32_t key; int64_t value; char name[16]; struct item *next; };",
        "",
    ]
    for i in range(FUNCTIONS):
        callee = f"f{i - 1}(x ^ {i}, items, n)" if i else "x"
        lines += [
            f"int64_t f{i}(int64_t x, struct item *items, int n) {{",
            f"    int64_t acc = {i * 7919 % 1000};",
            "    for (int k = 0; k < n; k++) {",
            f"        switch ((items[k].key + {i}) % 5) {{",
            f"        case 0: acc += items[k].value * {i % 13 + 1}; break;",
            f"        case 1: acc ^= items[k].value << {i % 7}; break;",
            f"        case 2: acc -= (int64_t)strlen(items[k].name) + {i}; break;",
            "        case 3: if (items[k].next) acc += items[k].next->value; break;",
            f"        default: acc = acc * 31 + {i}; break;",
            "        }",
            "    }",
            f"    if (acc % {i % 11 + 2} == 0) acc += {callee};",
            "    return acc;",
            "}",
            "",
        ]
    lines += [
        "int main(void) {",
        "    struct item items[8];",
        "    memset(items, 0, sizeof items);",
        "    for (int k = 0; k < 8; k++) { items[k].key = k; items[k].value = k * 3; }",
        f'    printf("%lld\\n", (long long)f{FUNCTIONS - 1}(5, items, 8));',
        "    return 0;",
        "}",
    ]
    return "\n".join(lines) + "\n"


def compile_job(build_dir: Path) -> tuple[tuple[str, ...], Path]:
    """(guest argv, sysroot) of the workload: bash runs gcc-12 -O2 -c on the generated file,
    then sha256sum of the object, all from the root."""
    root = ensure_root(GCC_PACKAGES, "debian-arm64-gcc-root")
    source = build_dir / "gcc-input.c"
    build_dir.mkdir(parents=True, exist_ok=True)
    text = generated_source()
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    obj = build_dir / "gcc-output.o"
    gcc = root / "usr" / "bin" / "aarch64-linux-gnu-gcc-12"
    # -B: the assembler by its full path in the root. Without it gcc finds "as" on PATH, and
    # under qemu-user the kernel then execs the host's x86 /usr/bin/as (binfmt_misc execs know
    # no QEMU_LD_PREFIX), which refuses aarch64's options.
    tools = root / "usr" / "bin" / "aarch64-linux-gnu-"
    script = (
        f"{gcc} -B{tools} -O2 -c -o {obj} {source} && {root / 'usr' / 'bin' / 'sha256sum'} < {obj}"
    )
    return (str(root / "bin" / "bash"), "-c", script), root
