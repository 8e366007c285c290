"""PCI: configuration space and BARs of a function (function.py), the generic ECAM host bridge
of the virt boards (host.py)."""
