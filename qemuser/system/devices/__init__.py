"""Device models, one per file, grouped by kind: char (UARTs), intc (interrupt controllers and
the CLINT), timer, rtc, misc, firmware (PSCI), flash. base.py has what they share;
registry.py the -device registry they register with."""
