"""hami backend for Cambricon MLUs. Installs the ``cambricon`` entry point of group ``hami.backends``."""
