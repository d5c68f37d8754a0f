"""HAMi's wire protocol: annotation keys, device/allocation codecs, quantities, signed allocations and
the node lock. The scheduler and the node agent speak only through these."""
