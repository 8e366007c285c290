"""Guest ABI layouts: each struct cites the kernel header it follows (asm-generic, 64-bit LE)."""
