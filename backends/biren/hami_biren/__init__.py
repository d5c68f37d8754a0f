"""hami backend for Biren GPUs."""
