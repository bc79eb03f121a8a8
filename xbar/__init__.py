"""xbar."""
