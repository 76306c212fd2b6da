"""Request validation against a ModelSpec: each rule and its message."""

from __future__ import annotations

import numpy as np
import pytest

from rayfront.errors import InvalidArgumentError
from rayfront.protocol.checks import validate_request
from rayfront.protocol.types import InferRequest, RequestedOutput
from rayfront.spec import ModelSpec, TensorSpec

DIGITS = ModelSpec(
    name="digits",
    platform="onnxruntime_onnx",
    max_batch_size=8,
    inputs=(
        TensorSpec(name="pixels", datatype="FP32", dims=(8, -1)),
        TensorSpec(name="mask", datatype="BOOL", dims=(8,), optional=True),
    ),
    outputs=(TensorSpec(name="logits", datatype="FP32", dims=(10,)),),
)
FIXED = ModelSpec(
    name="fixed",
    platform="onnxruntime_onnx",
    max_batch_size=0,
    inputs=(TensorSpec(name="x", datatype="INT64", dims=(2, 3)),),
    outputs=(TensorSpec(name="y", datatype="INT64", dims=(2, 3)),),
)


def _req(
    model: str = "digits", outputs: list[RequestedOutput] | None = None, **inputs: np.ndarray
) -> InferRequest:
    return InferRequest(model_name=model, inputs=inputs, outputs=outputs)


def test_validate_accepts_when_dynamic_dim_and_optional_input_omitted():
    req = _req(pixels=np.zeros((3, 8, 5), np.float32))
    assert validate_request(req, DIGITS) == 3


def test_validate_accepts_when_non_batching_shape_matches():
    req = _req("fixed", x=np.zeros((2, 3), np.int64))
    assert validate_request(req, FIXED) == 1


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        (
            {"pixels": np.zeros((1, 8, 8), np.int64)},
            None,
            r"input 'pixels' of model 'digits': expected dtype FP32, got INT64",
        ),
        ({}, None, r"input 'pixels' of model 'digits': missing required input \(FP32\[-1,8,-1\]\)"),
        (
            {"pixels": np.zeros((1, 8, 8), np.float32), "extra": np.zeros(1, np.float32)},
            None,
            r"input 'extra' of model 'digits': unexpected input; the model's inputs are 'pixels', 'mask'",
        ),
        (
            {"pixels": np.zeros((1, 64), np.float32)},
            None,
            r"input 'pixels' of model 'digits': expected shape \[-1,8,-1\], got \[1,64\]",
        ),
        (
            {"pixels": np.zeros((1, 7, 8), np.float32)},
            None,
            r"expected shape \[-1,8,-1\], got \[1,7,8\]",
        ),
        (
            {"pixels": np.zeros((9, 8, 8), np.float32)},
            None,
            r"input 'pixels' of model 'digits': batch size 9 exceeds the model's max_batch_size 8",
        ),
        (
            {"pixels": np.zeros((0, 8, 8), np.float32)},
            None,
            r"batch size must be at least 1, got 0",
        ),
        (
            {"pixels": np.zeros((2, 8, 8), np.float32), "mask": np.zeros((3, 8), bool)},
            None,
            r"input 'mask' of model 'digits': batch size 3 differs from input 'pixels' batch size 2",
        ),
        (
            {"pixels": np.zeros((1, 8, 8), np.float32)},
            [RequestedOutput("probs")],
            r"output 'probs' of model 'digits': unknown output; the model's outputs are 'logits'",
        ),
    ],
)
def test_validate_rejects_with_named_input_when_request_does_not_fit(inputs, outputs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        validate_request(_req(outputs=outputs, **inputs), DIGITS)


def test_validate_rejects_when_non_batching_rank_differs():
    with pytest.raises(
        InvalidArgumentError,
        match=r"input 'x' of model 'fixed': expected shape \[2,3\], got \[1,2,3\]",
    ):
        validate_request(_req("fixed", x=np.zeros((1, 2, 3), np.int64)), FIXED)


def test_validate_accepts_bytes_input_when_object_array():
    spec = ModelSpec(
        name="t",
        platform="onnxruntime_onnx",
        inputs=(TensorSpec(name="s", datatype="BYTES", dims=(-1,)),),
        outputs=(TensorSpec(name="o", datatype="BYTES", dims=(-1,)),),
    )
    validate_request(_req("t", s=np.array([b"a", b"b"], dtype=object)), spec)
    with pytest.raises(InvalidArgumentError, match="expected dtype BYTES, got FP32"):
        validate_request(_req("t", s=np.zeros(2, np.float32)), spec)
