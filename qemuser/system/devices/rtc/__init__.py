"""Real-time clocks: PL031."""
