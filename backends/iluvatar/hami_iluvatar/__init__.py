"""hami backend for Iluvatar CoreX GPUs (ixsmi discovery, HAMi vGPU shares)."""
