"""Pure tensor codec tests: every datatype both ways, and the error messages."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from rayfront import tensors
from rayfront.errors import InvalidArgumentError

NUMERIC = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 1, 255], [7, 8, 9]], np.uint8),
    "UINT16": np.array([[0, 1, 65535], [7, 8, 9]], np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1], [7, 8, 9]], np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1], [7, 8, 9]], np.uint64),
    "INT8": np.array([[-128, 0, 127], [7, 8, 9]], np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1], [7, 8, 9]], np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [7, 8, 9]], np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [7, 8, 9]], np.int64),
    "FP16": np.array([[0.5, -1.25, 65504.0], [np.inf, -0.0, 3.0]], np.float16),
    "FP32": np.array([[0.5, -1.25, 3.4e38], [1e-30, -0.0, 3.0]], np.float32),
    "FP64": np.array([[0.5, -1.25, 1e300], [1e-300, -0.0, 3.0]], np.float64),
}
BYTES = np.array(
    [[b"abc", b"", "h\u00e9llo".encode()], [b"\x00\xff", b"x" * 300, b"z"]], dtype=object
)


@pytest.mark.parametrize("datatype", [*NUMERIC, "BYTES"])
def test_codec_round_trips_raw_when_any_datatype(datatype):
    arr = BYTES if datatype == "BYTES" else NUMERIC[datatype]
    raw = tensors.tensor_to_raw(arr)
    back = tensors.tensor_from_raw(datatype, arr.shape, bytes(raw), name="x", model="m")
    assert back.shape == arr.shape
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("datatype", [*NUMERIC, "BYTES"])
def test_codec_round_trips_json_when_any_datatype(datatype):
    arr = BYTES[:, [1, 2]] if datatype == "BYTES" else NUMERIC[datatype]  # JSON BYTES: UTF-8 only
    data = tensors.tensor_to_json(arr)
    assert len(data) == arr.size  # flat
    back = tensors.tensor_from_json(datatype, arr.shape, data, name="x", model="m")
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == arr.dtype


def test_codec_bytes_layout_matches_tritonclient_when_serializing():
    ours = tensors.tensor_to_raw(BYTES)
    theirs = serialize_byte_tensor(BYTES).item()
    assert ours == theirs
    assert list(deserialize_bytes_tensor(ours)) == list(BYTES.reshape(-1))
    assert ours[:4] == struct.pack("<I", 3)


def test_codec_numeric_layout_is_little_endian_when_array_is_big_endian():
    arr = np.array([1, 2], dtype=">i4")
    assert bytes(tensors.tensor_to_raw(arr)) == b"\x01\x00\x00\x00\x02\x00\x00\x00"


def test_codec_decodes_without_copy_when_numeric_raw():
    body = bytes(range(16)) * 2
    view = memoryview(body)[8:24]
    arr = tensors.tensor_from_raw("FP32", [2, 2], view, name="x", model="m")
    assert np.shares_memory(arr, np.frombuffer(body, np.uint8))
    assert not arr.flags.writeable


def test_codec_encodes_without_copy_when_contiguous():
    arr = np.arange(6, dtype=np.float32)
    raw = tensors.tensor_to_raw(arr)
    assert isinstance(raw, memoryview)
    assert np.shares_memory(np.frombuffer(raw, np.float32), arr)


def test_codec_handles_non_contiguous_and_scalar_when_encoding():
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]
    back = tensors.tensor_from_raw(
        "INT32", arr.shape, bytes(tensors.tensor_to_raw(arr)), name="x", model="m"
    )
    np.testing.assert_array_equal(back, arr)
    scalar = np.float32(2.5).reshape(())
    assert (
        tensors.tensor_from_raw(
            "FP32", [], bytes(tensors.tensor_to_raw(scalar)), name="x", model="m"
        )
        == 2.5
    )


def test_codec_handles_zero_elements_when_shape_has_zero():
    arr = tensors.tensor_from_raw("FP32", [0, 4], b"", name="x", model="m")
    assert arr.shape == (0, 4)
    assert tensors.tensor_from_raw("BYTES", [0], b"", name="x", model="m").shape == (0,)


def test_codec_rejects_raw_when_byte_size_mismatches():
    with pytest.raises(
        InvalidArgumentError,
        match=r"input 'pixels' of model 'digits': expected 256 bytes for FP32\[1,8,8\], got 250",
    ):
        tensors.tensor_from_raw("FP32", [1, 8, 8], b"\0" * 250, name="pixels", model="digits")


def test_codec_rejects_bytes_when_elements_are_missing():
    raw = struct.pack("<I", 2) + b"ab"
    with pytest.raises(
        InvalidArgumentError,
        match=r"input 't' of model 'm': BYTES data holds 1 elements, expected 2",
    ):
        tensors.tensor_from_raw("BYTES", [2], raw, name="t", model="m")


def test_codec_rejects_bytes_when_length_prefix_overruns():
    raw = struct.pack("<I", 10) + b"ab"
    with pytest.raises(
        InvalidArgumentError, match="BYTES element 0 claims 10 bytes but only 2 remain"
    ):
        tensors.tensor_from_raw("BYTES", [1], raw, name="t", model="m")


def test_codec_rejects_bytes_when_trailing_data():
    raw = struct.pack("<I", 1) + b"ab"
    with pytest.raises(InvalidArgumentError, match="1 bytes after the 1 elements"):
        tensors.tensor_from_raw("BYTES", [1], raw, name="t", model="m")


def test_codec_rejects_datatype_when_unsupported():
    with pytest.raises(
        InvalidArgumentError, match=r"input 'x' of model 'm': unsupported datatype 'BF16'"
    ):
        tensors.tensor_from_raw("BF16", [1], b"\0\0", name="x", model="m")


@pytest.mark.parametrize("shape", [[-1, 2], [1.5], "12", [True]])
def test_codec_rejects_shape_when_not_non_negative_ints(shape):
    with pytest.raises(InvalidArgumentError, match="input 'x' of model 'm': shape must be a list"):
        tensors.tensor_from_raw("FP32", shape, b"", name="x", model="m")


def test_codec_accepts_nested_json_when_count_matches():
    arr = tensors.tensor_from_json("INT32", [2, 2], [[1, 2], [3, 4]], name="x", model="m")
    np.testing.assert_array_equal(arr, [[1, 2], [3, 4]])


def test_codec_rejects_json_when_element_count_mismatches():
    with pytest.raises(
        InvalidArgumentError,
        match=r"input 'x' of model 'm': shape \[2,2\] needs 4 elements, JSON data has 3",
    ):
        tensors.tensor_from_json("FP32", [2, 2], [1, 2, 3], name="x", model="m")


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("FP32", ["a"]),
        ("INT8", [300]),
        ("FP32", [[1, 2], [3]]),
        ("BOOL", [1, 0]),
        ("BYTES", [["a"], "b"]),
    ],
)
def test_codec_rejects_json_when_values_do_not_fit(datatype, data):
    with pytest.raises(
        InvalidArgumentError,
        match=f"input 'x' of model 'm': JSON data is not a valid {datatype} tensor",
    ):
        tensors.tensor_from_json(datatype, [2], data, name="x", model="m")


def test_codec_refuses_json_when_bytes_are_not_utf8():
    with pytest.raises(InvalidArgumentError, match="output 'o' holds BYTES that are not UTF-8"):
        tensors.tensor_to_json(np.array([b"\xff"], dtype=object), name="o")


def test_codec_json_payload_is_flat_native_array_when_numeric():
    arr = np.arange(6, dtype=">f4").reshape(2, 3)
    payload = tensors.json_payload(arr)
    assert payload.shape == (6,)
    assert payload.dtype.isnative


def test_codec_classify_returns_top_k_per_row_when_batched():
    out = tensors.classify(np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]], np.float32), 2)
    assert out.shape == (2, 2)
    assert out.tolist() == [[b"0.700000:1", b"0.200000:2"], [b"0.500000:0", b"0.400000:2"]]
    assert tensors.classify(np.array([3, 9, 1]), 1).tolist() == [b"9.000000:1"]


@pytest.mark.parametrize(
    ("datatype", "data", "fragment"),
    [
        ("FP32", ["NaN"] * 2, "FP32 data must be numbers, got strings"),
        ("FP32", [True, False], "got booleans"),
        ("FP32", [2**70, 1], "got other values"),
        ("FP32", [1e39, 1], "values overflow FP32"),
        ("INT64", [1.5, 2], "INT64 data must be integers"),
        ("INT8", [300, 1], "out of bounds for int8"),
        ("UINT8", [-1, 1], "out of bounds for uint8"),
        ("INT32", [1e30, 1], "integers within"),
        ("INT64", [1, "2"], "must be numbers, got strings"),
    ],
)
def test_tensor_from_json_refuses_values_triton_would_not_parse(datatype, data, fragment):
    from rayfront.tensors import tensor_from_json

    with pytest.raises(InvalidArgumentError, match=fragment):
        tensor_from_json(datatype, [2], data, name="x", model="m")


def test_tensor_from_json_keeps_exact_big_integers_and_integral_floats():
    from rayfront.tensors import tensor_from_json

    big = tensor_from_json("UINT64", [2], [0, 2**64 - 1], name="x", model="m")
    assert big.tolist() == [0, 2**64 - 1]
    assert tensor_from_json("INT32", [2], [1.0, -2.0], name="x", model="m").tolist() == [1, -2]
    assert tensor_from_json("FP16", [2], [1, 0.5], name="x", model="m").dtype == np.float16


def test_bytes_tensors_over_element_cap_are_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(tensors, "MAX_BYTES_ELEMENTS", 8)
    # 16 zero-length elements: 64 bytes that would decode into 16 objects.
    buf = struct.pack("<I", 0) * 16
    with pytest.raises(InvalidArgumentError, match="16 BYTES elements; at most 8"):
        tensors.tensor_from_raw("BYTES", [16], buf, name="t", model="m")
    with pytest.raises(InvalidArgumentError, match="16 BYTES elements; at most 8"):
        tensors.tensor_from_json("BYTES", [16], [""] * 16, name="t", model="m")
    assert tensors.tensor_from_raw("BYTES", [8], buf[:32], name="t", model="m").shape == (8,)
