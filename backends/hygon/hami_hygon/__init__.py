"""hami backend for Hygon DCUs. Installs the ``hygon`` entry point of group ``hami.backends``."""
