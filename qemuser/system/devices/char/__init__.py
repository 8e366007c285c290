"""Serial ports: PL011, NS16550A."""
