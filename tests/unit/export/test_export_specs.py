"""--input / --output / --trt-shape / --version-policy parsing, including every bad case."""

from __future__ import annotations

import pytest

from rayfront.errors import InputSpecError
from rayfront.export.request import parse_version_policy
from rayfront.export.specs import (
    check_trt_shapes,
    check_unique,
    parse_input_spec,
    parse_output_spec,
    parse_trt_shape,
)


def test_parse_input_spec_returns_tensor_spec_when_spec_is_valid():
    spec = parse_input_spec("pixels:fp32:1,8,8")
    assert (spec.name, spec.datatype, spec.dims) == ("pixels", "FP32", (1, 8, 8))


def test_parse_input_spec_keeps_dynamic_dims_when_minus_one():
    spec = parse_input_spec("input_ids:INT64:-1")
    assert spec.dims == (-1,)
    assert parse_input_spec(" x : BOOL : 3, -1 ").dims == (3, -1)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("pixels", "expected 3 ':'-separated fields NAME:DTYPE:SHAPE"),
        ("pixels:FP32", "expected 3 ':'-separated fields"),
        ("a:FP32:1:2", "got 4"),
        (":FP32:1", "missing tensor name"),
        ("1x:FP32:1", "tensor name '1x' is not allowed"),
        ("x y:FP32:1", "tensor name 'x y' is not allowed"),
        ("x:FLOAT:1", "unsupported datatype 'FLOAT'; expected one of BOOL"),
        ("x:BYTES:1", "BYTES \\(strings\\) cannot be exported"),
        ("x:FP32:", "empty shape"),
        ("x:FP32:1,a", "dim 'a' is not an integer"),
        ("x:FP32:1,,2", "dim '' is not an integer"),
        ("x:FP32:0", "dim 0 is invalid"),
        ("x:FP32:-2", "dim -2 is invalid"),
        ("x:FP32:1.5", "dim '1.5' is not an integer"),
    ],
)
def test_parse_input_spec_raises_input_spec_error_when_spec_is_bad(spec, match):
    with pytest.raises(InputSpecError, match=match) as info:
        parse_input_spec(spec)
    assert repr(spec) in str(info.value)  # the message quotes what the user typed


def test_parse_output_spec_accepts_bare_name_when_no_dtype_given():
    out = parse_output_spec("logits")
    assert (out.name, out.datatype, out.dims) == ("logits", None, None)


def test_parse_output_spec_parses_dtype_and_dims_when_given():
    out = parse_output_spec("logits:FP16:10,-1")
    assert (out.name, out.datatype, out.dims) == ("logits", "FP16", (10, -1))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("logits:FP32", "expected NAME or NAME:DTYPE:SHAPE"),
        ("", "missing tensor name"),
        ("lo gits", "is not allowed"),
        ("logits:STRING:1", "unsupported datatype"),
        ("logits:FP32:0", "dim 0 is invalid"),
    ],
)
def test_parse_output_spec_raises_when_spec_is_bad(spec, match):
    with pytest.raises(InputSpecError, match=match):
        parse_output_spec(spec)


def test_parse_trt_shape_returns_ranges_when_spec_is_valid():
    r = parse_trt_shape("image:3,32,32/3,224,224/3,512,512")
    assert (r.name, r.min, r.opt, r.max) == ("image", (3, 32, 32), (3, 224, 224), (3, 512, 512))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("ids", "expected NAME:MIN/OPT/MAX"),
        ("ids:1/2", "three '/'-separated shapes"),
        ("ids:1/-1/4", "dim -1 is not allowed here"),
        ("ids:1/2,3/4", "same number of dims"),
        ("ids:8/4/16", "MIN <= OPT <= MAX, got 8/4/16"),
    ],
)
def test_parse_trt_shape_raises_when_spec_is_bad(spec, match):
    with pytest.raises(InputSpecError, match=match):
        parse_trt_shape(spec)


def test_check_trt_shapes_raises_when_input_is_unknown():
    with pytest.raises(InputSpecError, match="no such input; inputs are \\['ids'\\]"):
        check_trt_shapes([parse_trt_shape("mask:1/2/3")], [parse_input_spec("ids:INT64:-1")])


def test_check_trt_shapes_raises_when_rank_differs():
    with pytest.raises(InputSpecError, match="1 dims given, but input 'x' has 2 dims"):
        check_trt_shapes([parse_trt_shape("x:1/2/3")], [parse_input_spec("x:FP32:3,-1")])


def test_check_trt_shapes_raises_when_static_dim_is_changed():
    with pytest.raises(InputSpecError, match="dim 0 is static \\(3\\)"):
        check_trt_shapes([parse_trt_shape("x:4,1/4,2/4,3")], [parse_input_spec("x:FP32:3,-1")])


def test_check_trt_shapes_maps_by_name_when_valid():
    got = check_trt_shapes([parse_trt_shape("x:3,1/3,2/3,9")], [parse_input_spec("x:FP32:3,-1")])
    assert got["x"].max == (3, 9)


def test_check_unique_raises_when_name_repeats():
    with pytest.raises(InputSpecError, match="--input 'x' is given more than once"):
        check_unique(["x", "y", "x"], "--input")


@pytest.mark.parametrize(
    ("text", "kind", "num", "versions"),
    [
        ("latest", "latest", 1, ()),
        ("latest:3", "latest", 3, ()),
        ("all", "all", 1, ()),
        ("specific:1,3", "specific", 1, (1, 3)),
    ],
)
def test_parse_version_policy_returns_policy_when_valid(text, kind, num, versions):
    policy = parse_version_policy(text)
    assert (policy.kind, policy.num_versions, policy.versions) == (kind, num, versions)


@pytest.mark.parametrize("text", ["newest", "latest:x", "all:2", "specific", "specific:a"])
def test_parse_version_policy_raises_when_invalid(text):
    with pytest.raises(InputSpecError, match="expected latest, latest:N, all, or specific"):
        parse_version_policy(text)
