"""Make tritonclient's protobuf messages picklable across processes.

tritonclient generates its protobuf modules from ``grpc_service.proto`` and
``model_config.proto`` and registers the message classes under the TOP-LEVEL module
names ``grpc_service_pb2`` and ``model_config_pb2`` (``ModelInferRequest.__module__ ==
"grpc_service_pb2"``), while the code lives in ``tritonclient.grpc.service_pb2`` /
``tritonclient.grpc.model_config_pb2``. Pickle stores a class by ``module + qualname``,
so:

- ``pickle.dumps(ModelInferRequest())`` fails ("import of module 'grpc_service_pb2'
  failed"), and cloudpickle falls back to pickling the class by value, which fails on
  its descriptor;
- bytes pickled where the names were importable fail to load elsewhere with
  ``ModuleNotFoundError: No module named 'grpc_service_pb2'``.

Ray Serve's gRPC proxy pickles each request to hand it to a replica, so every process
that pickles or unpickles these messages (proxy, replicas, driver) must call
:func:`install` first. It registers the two names in ``sys.modules``; nothing happens
on import of this module.
"""

from __future__ import annotations

import importlib
import sys

#: Top-level module name the generated classes claim -> the module that defines them.
ALIASES: dict[str, str] = {
    "grpc_service_pb2": "tritonclient.grpc.service_pb2",
    "model_config_pb2": "tritonclient.grpc.model_config_pb2",
}


def install() -> None:
    """Register the aliases in ``sys.modules`` (idempotent; never replaces a real module)."""
    for alias, target in ALIASES.items():
        if alias not in sys.modules:
            sys.modules[alias] = importlib.import_module(target)


def installed() -> bool:
    """True when both names resolve to tritonclient's modules in this process."""
    return all(
        alias in sys.modules and sys.modules[alias].__name__ == target
        for alias, target in ALIASES.items()
    )
