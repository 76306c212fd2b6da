"""rayfront: export PyTorch models into a Triton model repository and serve it on Ray Serve.

The installed package maps the repository's top-level folders: ``serve/`` is this core
package, ``export/`` is :mod:`rayfront.export`, ``benchmarks/`` is :mod:`rayfront.benchmarks`.
"""

__version__ = "0.1.0"
