"""The ingress -> replica hand-off: rayfront's own transport, not Serve handle calls.

``frames`` is the wire format, ``server`` the replica side, ``client`` one connection,
``pool`` every replica of a version, ``discovery`` where replicas listen and how they are
found, ``backend`` the interface the ingress sees, ``local`` an in-process stand-in.
Unix sockets on a node, TCP across nodes. No Ray here (the directory lives in deploy.kv).
"""
