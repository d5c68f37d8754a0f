"""hami backend for AMD Instinct/Radeon GPUs. Installs the ``amd`` entry point of group ``hami.backends``."""
