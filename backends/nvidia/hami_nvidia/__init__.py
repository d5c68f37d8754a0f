"""hami backend for NVIDIA GPUs. Installs the ``nvidia`` entry point of group ``hami.backends``."""
