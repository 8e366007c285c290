"""One module per architecture: its `CorePlatform` (vCPUs, exceptions, interrupts, timers, FDT
cpu nodes, boot conventions). The machine names no architecture; a board names its platform."""
