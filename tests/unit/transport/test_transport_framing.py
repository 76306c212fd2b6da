"""Fast-path framing: tensors and errors survive encode -> bytes -> decode exactly."""

from __future__ import annotations

import numpy as np
import pytest

from rayfront import errors
from rayfront.transport.frames import (
    FRAME,
    KIND_ERROR,
    KIND_REQUEST,
    ConnectionLost,
    ProtocolError,
    RequestMeta,
    check_fixed,
    decode_error,
    decode_tensors,
    encode_error,
    encode_tensors,
)

NUMERIC = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def _wire(frame: list) -> tuple[int, int, int, bytes]:
    """Join a frame as the socket would and split it as the reader does."""
    data = b"".join(bytes(part) for part in frame)
    request_id, kind, header_len, body_len = FRAME.unpack_from(data)
    payload = data[FRAME.size :]
    assert len(payload) == header_len + body_len
    return request_id, kind, header_len, payload


def _roundtrip(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    request_id, kind, header_len, payload = _wire(encode_tensors(7, KIND_REQUEST, tensors))
    assert (request_id, kind) == (7, KIND_REQUEST)
    return decode_tensors(payload, header_len)[0]


def _sample(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype is np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("datatype", list(NUMERIC))
@pytest.mark.parametrize("shape", [(3, 5), (0, 4), (2,), ()], ids=["2d", "0-rows", "1d", "scalar"])
def test_encode_tensors_roundtrips_exactly_when_dtype_is_numeric(datatype, shape):
    arr = _sample(NUMERIC[datatype], shape)
    out = _roundtrip({"x": arr})["x"]
    assert out.dtype == arr.dtype
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_encode_tensors_roundtrips_bytes_when_elements_are_str_bytes_or_empty():
    arr = np.array([[b"abc", "h\u00e9llo"], [b"", b"\x00\xff"]], dtype=object)
    out = _roundtrip({"s": arr})["s"]
    assert out.shape == (2, 2)
    assert out.tolist() == [[b"abc", "h\u00e9llo".encode()], [b"", b"\x00\xff"]]


def test_encode_tensors_roundtrips_bytes_when_tensor_has_zero_rows():
    out = _roundtrip({"s": np.empty((0, 3), dtype=object)})["s"]
    assert out.shape == (0, 3)
    assert out.dtype == object


def test_encode_tensors_keeps_every_tensor_when_several_are_sent():
    tensors = {
        "ids": np.arange(12, dtype=np.int64).reshape(3, 4),
        "mask": np.ones((3, 4), np.bool_),
        "text": np.array([b"a", b"bb", b"ccc"], dtype=object),
        "empty": np.zeros((3, 0), np.float32),
    }
    out = _roundtrip(tensors)
    assert list(out) == list(tensors)
    for name, arr in tensors.items():
        np.testing.assert_array_equal(out[name], arr)
        assert out[name].shape == arr.shape


def test_encode_tensors_copies_layout_when_array_is_not_contiguous():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = base[:, ::2].T  # neither C- nor F-contiguous
    out = _roundtrip({"v": view})["v"]
    np.testing.assert_array_equal(out, view)


def test_encode_tensors_converts_when_array_is_big_endian():
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    out = _roundtrip({"b": arr})["b"]
    assert out.dtype == np.dtype(np.int32)
    np.testing.assert_array_equal(out, arr)


def test_decode_tensors_returns_views_when_data_is_numeric():
    _, _, header_len, payload = _wire(
        encode_tensors(1, KIND_REQUEST, {"x": np.ones((64, 16), np.float32)})
    )
    out = decode_tensors(payload, header_len)[0]["x"]
    assert not out.flags.owndata  # a view of the received buffer, not a copy
    assert not out.flags.writeable


def test_encode_tensors_rejects_when_dtype_has_no_kserve_name():
    with pytest.raises(errors.InvalidArgumentError, match="tensor 'z' has numpy dtype complex64"):
        encode_tensors(1, KIND_REQUEST, {"z": np.zeros(2, np.complex64)})


def test_decode_tensors_raises_internal_when_frame_is_truncated():
    _, _, header_len, payload = _wire(
        encode_tensors(1, KIND_REQUEST, {"x": np.ones(8, np.float32)})
    )
    with pytest.raises(errors.InternalError, match="tensor 'x' claims 32 bytes"):
        decode_tensors(payload[:-4], header_len)


@pytest.mark.parametrize(
    "cls",
    [
        errors.InvalidArgumentError,
        errors.NotFoundError,
        errors.UnavailableError,
        errors.DeadlineExceededError,
        errors.PayloadTooLargeError,
        errors.InternalError,
        errors.FailedPreconditionError,
    ],
)
def test_decode_error_rebuilds_same_class_when_error_is_a_rayfront_error(cls):
    _, kind, header_len, payload = _wire(encode_error(3, cls.__name__, "input 'x': bad"))
    assert kind == KIND_ERROR
    exc = decode_error(payload, header_len)
    assert type(exc) is cls
    assert exc.message == "input 'x': bad"


@pytest.mark.parametrize("name", ["ValueError", "Status", "status_for", "NoSuchError"])
def test_decode_error_falls_back_to_internal_when_name_is_not_a_rayfront_error(name):
    _, _, header_len, payload = _wire(encode_error(3, name, "boom"))
    exc = decode_error(payload, header_len)
    assert type(exc) is errors.InternalError
    assert exc.message == "boom"


def test_decode_error_gives_connection_lost_when_replica_marks_it_retryable():
    _, _, header_len, payload = _wire(
        encode_error(3, "UnavailableError", "replica is shutting down", retryable=True)
    )
    exc = decode_error(payload, header_len)
    assert isinstance(exc, ConnectionLost)
    assert isinstance(exc, errors.UnavailableError)
    assert not exc.connect_failed


def test_request_meta_survives_the_frame_when_timeout_and_priority_are_set():
    frame = encode_tensors(
        3, KIND_REQUEST, {"x": np.ones(2, np.float32)}, meta=RequestMeta(timeout_us=500, priority=2)
    )
    _, _, header_len, payload = _wire(frame)
    _, meta = decode_tensors(payload, header_len)
    assert (meta.timeout_us, meta.priority) == (500, 2)


def test_placed_tensor_travels_as_reference_when_place_accepts_it():
    placed: dict[int, bytes] = {}

    def place(arr: np.ndarray) -> list:
        placed[1000] = arr.tobytes()
        return ["a", 1000]

    big = np.arange(10, dtype=np.float32)
    _, _, header_len, payload = _wire(encode_tensors(1, KIND_REQUEST, {"x": big}, place=place))
    assert len(payload) == header_len  # no inline bytes
    out, _ = decode_tensors(payload, header_len, arena=lambda off, n: memoryview(placed[off])[:n])
    np.testing.assert_array_equal(out["x"], big)


def test_decode_refuses_arena_reference_when_receiver_has_no_arena():
    _, _, header_len, payload = _wire(
        encode_tensors(1, KIND_REQUEST, {"x": np.ones(4, np.float32)}, place=lambda a: ["a", 0])
    )
    with pytest.raises(errors.InternalError, match="unusable location"):
        decode_tensors(payload, header_len)


@pytest.mark.parametrize(
    ("kind", "header_len", "body_len", "message"),
    [
        (99, 0, 0, "unknown frame kind 99"),
        (KIND_REQUEST, 1 << 30, 0, "frame header of"),
        (KIND_REQUEST, 10, 1 << 40, "exceeds the 1048576-byte cap"),
    ],
)
def test_check_fixed_refuses_frame_before_reading_it_when_header_is_hostile(
    kind, header_len, body_len, message
):
    with pytest.raises(ProtocolError, match=message):
        check_fixed(kind, header_len, body_len, max_body=1 << 20)
