"""qemuser: a Python re-creation of QEMU's user mode and a small system mode."""

__version__ = "0.1.0"
