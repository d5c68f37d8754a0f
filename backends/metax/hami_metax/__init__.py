"""hami backend for MetaX GPUs (mx-smi discovery, whole GPUs and sGPU shares)."""
