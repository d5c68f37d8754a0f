"""Protocol-faithful stand-ins for what cannot run here: an in-memory Kubernetes API server, a fake
kubelet, fake vendor tools, and drivers that play kube-scheduler. They are product features (the
sandbox, ``hami dev apiserver``, benchmarks, backend authors' tests) and import without pytest;
the pytest fixtures around them live in :mod:`hami.testing`."""
