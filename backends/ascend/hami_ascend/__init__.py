"""hami backend for Huawei Ascend NPUs. Installs the ``ascend`` entry point of group ``hami.backends``."""
