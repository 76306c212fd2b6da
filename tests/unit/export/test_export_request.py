"""ExportRequest: CLI strings parsed, cross-field rules enforced with one-line errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rayfront.errors import InputSpecError
from rayfront.export.request import ExportRequest

BASE = {"model_ref": "m:f", "name": "m", "inputs": ["x:FP32:4"], "max_batch_size": 8}


def _req(**kw):
    return ExportRequest(**{**BASE, **kw})


def test_export_request_parses_spec_strings_when_given_cli_text():
    req = _req(outputs=["y:FP32:2"], trt_shapes=[], version_policy="latest:2")
    assert req.inputs[0].dims == (4,)
    assert req.outputs[0].datatype == "FP32"
    assert req.version_policy.num_versions == 2


def test_export_request_defaults_preferred_sizes_to_half_and_max_when_unset():
    assert _req().effective_preferred_batch_sizes == (4, 8)
    assert _req(max_batch_size=1).effective_preferred_batch_sizes == (1,)
    assert _req(max_batch_size=0).effective_preferred_batch_sizes == ()
    assert _req(preferred_batch_sizes=[8, 2, 2]).effective_preferred_batch_sizes == (2, 8)


def test_export_request_names_sibling_models_when_asked():
    req = _req(name="digits")
    assert (req.trt_name, req.torchscript_name) == ("digits_trt", "digits_torchscript")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"inputs": ["x:FP32:4", "x:FP32:2"]}, "--input 'x' is given more than once"),
        ({"outputs": ["y", "y"]}, "--output 'y' is given more than once"),
        ({"outputs": ["x"]}, "used for both an input and an output"),
        (
            {"preferred_batch_sizes": [16]},
            "--preferred-batch-size \\[16\\] must be within 1..--max-batch-size \\(8\\)",
        ),
        ({"max_batch_size": 0, "preferred_batch_sizes": [1]}, "needs batching"),
        ({"parity_batch_sizes": [0]}, "--parity-batch-size \\[0\\]"),
        ({"fp16": True, "tensorrt": "off"}, "--fp16 applies to the TensorRT plan"),
        ({"precision": "fp16", "tensorrt": "off"}, "add --torchscript or leave --tensorrt"),
        ({"precision": "bf16", "fp16": True}, "contradict"),
        ({"precision": "fp8"}, None),
        ({"name": "../evil"}, "--name '../evil'"),
        ({"name": ".hidden"}, "--name '.hidden'"),
        ({"trt_shapes": ["y:1/2/3"]}, "no such input"),
        ({"version_policy": "newest"}, "--version-policy 'newest'"),
    ],
)
def test_export_request_raises_input_spec_error_when_options_conflict(kw, match):
    with pytest.raises(InputSpecError if match else ValidationError, match=match):
        _req(**kw)


def test_export_request_picks_reduced_tolerance_and_trt_flags_from_precision():
    req = _req(precision="fp16", torchscript=True, atol=1e-4, rtol=1e-3)
    assert req.trt_fp16 and req.reduced_tolerance("fp16") == (1e-2, 1e-2)
    assert req.reduced_tolerance("fp32") == (1e-4, 1e-3)
    bf16 = _req(precision="bf16", torchscript=True)
    assert not bf16.trt_fp16 and bf16.reduced_tolerance("bf16") == (1e-2, 4e-2)


def test_export_request_rejects_unknown_fields_when_extra_given():
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        _req(bogus=1)


def test_export_request_rejects_negative_tolerance_when_given():
    with pytest.raises(ValidationError, match="atol"):
        _req(atol=-1.0)
