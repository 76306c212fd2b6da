"""The Triton model repository: config.pbtxt via Triton's protobuf, atomic writes, validation.

Public surface (imported lazily, so ``rayfront --help`` does not load protobuf/tritonclient):

- :mod:`rayfront.repository.config`: ``spec_to_proto``, ``proto_to_spec``, ``render_config``,
  ``parse_config``, ``read_config``
- :mod:`rayfront.repository.sidecar`: ``Provenance``, ``ParityRecord``, ``TensorRTStamp``,
  ``write_sidecar``, ``read_sidecar``, ``SIDECAR_NAME``
- :mod:`rayfront.repository.layout`: ``Repository``
- :mod:`rayfront.repository.writer`: ``write_version``, ``atomic_write_bytes``
- :mod:`rayfront.repository.validate`: ``validate_repository``, ``check_onnx_signature``,
  ``check_plan_stamp``, ``ModelReport``, ``Problem``
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CONFIG_NAME": "config",
    "spec_to_proto": "config",
    "proto_to_spec": "config",
    "render_config": "config",
    "parse_config": "config",
    "read_config": "config",
    "SIDECAR_NAME": "sidecar",
    "ParityRecord": "sidecar",
    "Provenance": "sidecar",
    "TensorRTStamp": "sidecar",
    "read_sidecar": "sidecar",
    "write_sidecar": "sidecar",
    "Repository": "layout",
    "apply_version_policy": "layout",
    "atomic_write_bytes": "writer",
    "atomic_write_text": "writer",
    "signature_differences": "writer",
    "write_version": "writer",
    "ModelReport": "validate",
    "Problem": "validate",
    "check_onnx_signature": "validate",
    "check_plan_stamp": "validate",
    "validate_repository": "validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rayfront.repository' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rayfront.repository.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
