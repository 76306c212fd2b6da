"""KServe v2 / Triton protocol: the HTTP ASGI app and the gRPC service, thin over one contract.

``contract`` is what a transport needs from the server; ``http_app``/``http_codec`` and
``grpc_service``/``grpc_codec`` adapt it to each wire; ``checks`` validates a decoded
request against the model; ``types`` holds the transport-neutral request and response.
Tensor bytes are converted only by :mod:`rayfront.tensors`. No Ray here.
"""
