"""rayfront's benchmark suite: a sweep runner, baselines, Locust users and a report.

``rayfront bench run`` (or ``python -m rayfront.benchmarks run``) measures, in one run on
one machine, the raw ONNX Runtime limit, rayfront's batcher in-process, a bare ASGI
server, a plain Ray Serve deployment and rayfront over HTTP and gRPC, then writes JSON,
CSV, plots and a markdown summary with a knee-based recommendation. ``locustfile.py``
holds Locust users for the same KServe v2 requests. See ``benchmarks/README.md``.

Nothing is imported here so ``rayfront --help`` stays fast; import the submodules.
"""
