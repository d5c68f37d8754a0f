"""Helpers for backends of the usual shape: the standard backend, HAMi's request rules, even
splitting, selectors, presence-based health, the vendor-tool runner and the simulated inventory.
Backend authors reach them through :mod:`hami.sdk`."""
