"""hami backend for Moore Threads GPUs. Installs the ``mthreads`` entry point of group ``hami.backends``."""
