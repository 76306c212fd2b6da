"""Pure collation helpers: collate/split round trips, grouping, row counting."""

from __future__ import annotations

import numpy as np
import pytest

from rayfront.batching import collate, effective_timeout_us, group_key, request_rows, split
from rayfront.errors import InternalError, InvalidArgumentError
from rayfront.spec import QueuePolicy


def _request(rows: int, seed: int, dtype: str, tail: tuple[int, ...]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if dtype == "bytes":
        x = np.array(
            [f"r{seed}-{i}".encode() for i in range(rows * int(np.prod(tail)))], dtype=object
        ).reshape(rows, *tail)
    else:
        x = (rng.standard_normal((rows, *tail)) * 100).astype(dtype)
    ids = np.arange(rows, dtype=np.int64) + 1000 * seed
    return {"x": x, "ids": ids}


@pytest.mark.parametrize("sizes", [[1], [1, 1], [3, 1, 4], [2, 5], [1] * 17])
@pytest.mark.parametrize("dtype", ["float32", "int64", "float16", "bytes"])
@pytest.mark.parametrize("tail", [(3,), (2, 4), ()])
def test_collate_split_round_trip_returns_each_request_exactly(sizes, dtype, tail):
    items = [_request(n, seed, dtype, tail) for seed, n in enumerate(sizes)]
    batch, got_sizes = collate(items)
    assert got_sizes == sizes
    assert batch["x"].shape == (sum(sizes), *tail)
    parts = split(batch, got_sizes)
    assert len(parts) == len(items)
    for item, part in zip(items, parts, strict=True):
        assert part.keys() == item.keys()
        for name in item:
            assert part[name].dtype == item[name].dtype
            np.testing.assert_array_equal(part[name], item[name])


def test_collate_rejects_requests_when_non_batch_shapes_differ():
    a = {"x": np.zeros((1, 3), np.float32)}
    b = {"x": np.zeros((1, 4), np.float32)}
    with pytest.raises(
        ValueError, match=r"request 1 cannot join this batch: its inputs x:float32\[1, 4\]"
    ):
        collate([a, b])


def test_collate_rejects_requests_when_dtypes_differ():
    a = {"x": np.zeros((1, 3), np.float32)}
    b = {"x": np.zeros((1, 3), np.float64)}
    with pytest.raises(ValueError, match="differ from the first request"):
        collate([a, b])


def test_collate_rejects_empty_list_when_called_without_requests():
    with pytest.raises(ValueError, match="at least one request"):
        collate([])


def test_split_raises_internal_error_when_output_rows_differ_from_inputs():
    outputs = {"y": np.zeros((5, 2), np.float32)}
    with pytest.raises(
        InternalError,
        match=r"model 'toy': output 'y' has 5 rows, expected 6 \(the rows of 2 batched",
    ):
        split(outputs, [2, 4], model="toy")


def test_split_raises_internal_error_when_output_is_scalar():
    with pytest.raises(InternalError, match="output 'y' has a scalar, expected 3"):
        split({"y": np.float32(1.0) * np.ones(())}, [3])


def test_group_key_is_equal_when_only_batch_size_differs():
    a = {"x": np.zeros((1, 3), np.float32), "m": np.zeros((1,), np.int64)}
    b = {"m": np.zeros((7,), np.int64), "x": np.zeros((7, 3), np.float32)}
    assert group_key(a) == group_key(b)


@pytest.mark.parametrize(
    "other",
    [
        {"x": np.zeros((1, 4), np.float32)},
        {"x": np.zeros((1, 3), np.float64)},
        {"x": np.zeros((1, 3, 1), np.float32)},
        {"x": np.zeros((1, 3), np.float32), "extra": np.zeros((1,), np.float32)},
    ],
)
def test_group_key_differs_when_shape_dtype_or_names_differ(other):
    assert group_key({"x": np.zeros((1, 3), np.float32)}) != group_key(other)


def test_request_rows_raises_when_inputs_disagree_on_batch_size():
    inputs = {"a": np.zeros((2, 3)), "b": np.zeros((3,))}
    with pytest.raises(InvalidArgumentError, match="'a' has 2, 'b' has 3"):
        request_rows(inputs, "toy")


def test_request_rows_raises_when_input_is_scalar():
    with pytest.raises(
        InvalidArgumentError, match="input 'a' of model 'toy': expected a batch dimension"
    ):
        request_rows({"a": np.zeros(())}, "toy")


def test_request_rows_raises_when_batch_is_empty():
    with pytest.raises(InvalidArgumentError, match="must be at least 1, got 0"):
        request_rows({"a": np.zeros((0, 3))}, "toy")


@pytest.mark.parametrize(
    ("default", "override", "requested", "expected"),
    [
        (0, True, None, 0),
        (0, True, 500, 500),
        (1000, True, None, 1000),
        (1000, True, 500, 500),
        (1000, True, 5000, 1000),  # may shorten, never extend
        (1000, False, 500, 1000),
        (1000, True, 0, 1000),
    ],
)
def test_effective_timeout_follows_triton_queue_policy_when_request_sets_timeout(
    default, override, requested, expected
):
    policy = QueuePolicy(default_timeout_microseconds=default, allow_timeout_override=override)
    assert effective_timeout_us(policy, requested) == expected


def test_effective_timeout_raises_when_negative():
    with pytest.raises(InvalidArgumentError, match="timeout must be >= 0 microseconds, got -5"):
        effective_timeout_us(QueuePolicy(), -5, "toy")
