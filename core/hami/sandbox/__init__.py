"""``hami sandbox``: a whole heterogeneous cluster in one process, over real HTTP and gRPC."""
