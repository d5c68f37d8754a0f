"""Generated protobuf/gRPC modules for the kubelet device plugin API v1beta1 (``api_pb2``, ``api_pb2_grpc``).

Do not edit the generated files; edit ``api.proto`` and run ``python -m hami.node.deviceplugin.regenerate``.
"""
