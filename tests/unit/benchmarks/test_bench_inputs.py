"""Locust request inputs: demo data, npz arrays, random data from metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rayfront.benchmarks.load.inputs import (
    InputMeta,
    make_inputs,
    specs_from_grpc_metadata,
    specs_from_http_metadata,
)
from rayfront.errors import InvalidArgumentError


def test_specs_from_http_metadata_reads_inputs_when_present() -> None:
    specs = specs_from_http_metadata(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]}
    )
    assert specs == [InputMeta("x", "FP32", (-1, 64))]
    with pytest.raises(InvalidArgumentError, match="no usable 'inputs' list"):
        specs_from_http_metadata({"error": "unknown model"})


def test_specs_from_grpc_metadata_reads_inputs_when_present() -> None:
    from tritonclient.grpc import service_pb2

    meta = service_pb2.ModelMetadataResponse(name="m")
    t = meta.inputs.add()
    t.name, t.datatype = "ids", "INT64"
    t.shape.extend([-1, -1])
    assert specs_from_grpc_metadata(meta) == [InputMeta("ids", "INT64", (-1, -1))]


def test_make_inputs_fills_batch_and_dynamic_dims_when_random() -> None:
    specs = [
        InputMeta("x", "FP32", (-1, 3)),
        InputMeta("ids", "INT64", (-1, -1)),
        InputMeta("m", "BOOL", (-1, 2)),
    ]
    out = make_inputs("any", specs, 5)
    assert out["x"].shape == (5, 3) and out["x"].dtype == np.float32
    assert out["ids"].shape == (5, 16) and out["ids"].dtype == np.int64
    assert out["m"].dtype == np.bool_


def test_make_inputs_uses_real_digits_when_model_is_digits_demo() -> None:
    out = make_inputs("digits", [InputMeta("pixels", "FP32", (-1, 1, 8, 8))], 3)
    pixels = out["pixels"]
    assert pixels.shape == (3, 1, 8, 8)
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert len(np.unique(pixels)) > 2  # real images, not zeros or noise in [-inf, inf]


def test_make_inputs_cycles_npz_rows_when_batch_is_larger(tmp_path: Path) -> None:
    path = tmp_path / "in.npz"
    np.savez(path, x=np.arange(6, dtype=np.float32).reshape(2, 3))
    out = make_inputs("any", [InputMeta("x", "FP32", (-1, 3))], 5, npz=path)
    assert out["x"][:, 0].tolist() == [0, 3, 0, 3, 0]
    with pytest.raises(InvalidArgumentError, match=r"no arrays for inputs \['y'\]"):
        make_inputs("any", [InputMeta("y", "FP32", (-1, 3))], 1, npz=path)


def test_make_inputs_raises_when_batch_size_not_positive() -> None:
    with pytest.raises(InvalidArgumentError, match="batch size must be >= 1, got 0"):
        make_inputs("any", [InputMeta("x", "FP32", (-1, 3))], 0)
