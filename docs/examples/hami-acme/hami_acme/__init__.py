"""hami backend for ACME NPUs."""
