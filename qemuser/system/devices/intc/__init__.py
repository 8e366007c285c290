"""Interrupt controllers (GICv2, PLIC) and the riscv CLINT."""
