"""Node-side components: what runs on each Kubernetes node (device plugin API, node agent)."""
