"""QEMU's option syntax (QemuOpts): `key=value` items separated by commas, where ",," is a
literal comma inside a value. One splitter for every option that uses it (-device, -drive,
-chardev, -netdev, ...)."""

from __future__ import annotations


def split_commas(text: str) -> list[str]:
    """The items of `text`: split at single commas, ",," kept as one comma."""
    items: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                current.append(",")
                i += 2
                continue
            items.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    items.append("".join(current))
    return items


def split_options(text: str) -> list[tuple[str, str]]:
    """(key, value) pairs in order; an item without '=' has the value "" (a bare first item is
    the "implied" key of options such as -chardev's backend or -netdev's type)."""
    pairs = []
    for item in split_commas(text):
        key, _, value = item.partition("=")
        pairs.append((key, value))
    return pairs
