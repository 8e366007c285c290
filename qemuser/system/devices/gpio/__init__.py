"""GPIO controllers."""
