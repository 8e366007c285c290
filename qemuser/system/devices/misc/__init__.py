"""Miscellaneous board devices: the SiFive test finisher."""
