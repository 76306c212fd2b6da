"""The ingress -> replica hand-off: rayfront's own transport, not Serve handle calls.

``frames`` is the wire format, ``handshake`` the mutual authentication every connection
starts with, ``server`` the replica side, ``client`` one connection, ``pool`` every
replica of a version, ``discovery`` where replicas listen and how they are found,
``arena`` the shared memory large tensors cross on one host. Unix sockets on a node, TCP
across nodes. No Ray here (the endpoint directory itself lives in deploy.kv).
"""
