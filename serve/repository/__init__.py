"""The Triton model repository: config.pbtxt via Triton's protobuf, atomic writes, validation.

``pbtxt`` converts config.pbtxt to and from :class:`~rayfront.spec.ModelSpec`; ``layout``
reads a repository; ``writer`` publishes versions atomically; ``sidecar`` is the
per-version ``rayfront.json``; ``validate`` is ``rayfront repo validate``.
"""
