"""Firmware interfaces answered in Python: PSCI."""
