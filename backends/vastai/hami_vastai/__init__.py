"""hami backend for Vastai accelerators."""
