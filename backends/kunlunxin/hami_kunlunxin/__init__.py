"""hami backend for Kunlunxin XPUs (xpu-smi discovery, whole XPUs and vXPU partitions)."""
