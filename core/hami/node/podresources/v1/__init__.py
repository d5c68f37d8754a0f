"""Generated protobuf/gRPC modules for kubelet's PodResources API v1 (``api_pb2``, ``api_pb2_grpc``).

Do not edit the generated files; edit ``api.proto`` and run ``python -m hami.node.podresources.regenerate``.
"""
