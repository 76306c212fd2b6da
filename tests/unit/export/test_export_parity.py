"""Parity cases and the tolerance check."""

from __future__ import annotations

import numpy as np
import pytest

from rayfront.errors import ParityError
from rayfront.export.parity import (
    check_parity,
    flatten_outputs,
    make_cases,
    parity_batch_sizes,
)
from rayfront.export.specs import parse_input_spec


def _specs(*texts):
    return [parse_input_spec(t) for t in texts]


def _identity(feeds):
    return {"y": np.asarray(feeds["x"], dtype=np.float32)}


def test_parity_batch_sizes_cover_one_middle_and_max_when_not_requested():
    assert parity_batch_sizes(64) == [1, 32, 64]
    assert parity_batch_sizes(1) == [1]
    assert parity_batch_sizes(0) == [0]
    assert parity_batch_sizes(8, [8, 2, 2]) == [2, 8]


def test_parity_batch_sizes_raise_when_requested_size_exceeds_max():
    with pytest.raises(ValueError, match=r"outside 1\.\.max_batch_size"):
        parity_batch_sizes(4, [5])


def test_make_cases_builds_edge_cases_per_dtype_when_inputs_mixed():
    cases = make_cases(_specs("x:FP32:4", "ids:INT64:3", "flag:BOOL:1"), 8)
    assert {c.batch_size for c in cases} == {1, 4, 8}
    assert {c.case for c in cases} == {"random", "zeros", "large"}
    zeros = next(c for c in cases if c.case == "zeros")
    assert not zeros.feeds["x"].any() and not zeros.feeds["ids"].any()
    large = next(c for c in cases if c.case == "large" and c.batch_size == 8)
    assert np.abs(large.feeds["x"]).max() > 100
    for c in cases:
        assert c.feeds["x"].dtype == np.float32 and c.feeds["x"].shape == (c.batch_size, 4)
        assert c.feeds["ids"].dtype == np.int64
        assert c.feeds["ids"].min() >= 0 and c.feeds["ids"].max() < 2  # valid for any embedding
        assert c.feeds["flag"].dtype == np.bool_


def test_make_cases_skips_large_case_when_no_float_input():
    assert {c.case for c in make_cases(_specs("ids:INT64:3"), 2)} == {"random", "zeros"}


def test_make_cases_gives_dynamic_dims_one_shared_size_per_case_when_inputs_share_a_dim():
    cases = make_cases(_specs("ids:INT64:-1", "mask:INT64:-1"), 4)
    lengths = set()
    for c in cases:
        assert c.feeds["ids"].shape == c.feeds["mask"].shape
        lengths.add(c.feeds["ids"].shape[1])
    assert len(lengths) == 2
    assert {c.case for c in cases} == {
        "random/dyn-small",
        "random/dyn-large",
        "zeros/dyn-small",
        "zeros/dyn-large",
    }


def test_make_cases_uses_trt_ranges_for_dynamic_dims_when_given():
    cases = make_cases(_specs("ids:INT64:-1"), 2, dynamic_ranges={"ids": ((1,), (256,))})
    assert {c.feeds["ids"].shape[1] for c in cases} == {1, 256}


def test_make_cases_calls_input_generator_with_case_and_shape_when_given():
    seen = []

    def gen(kind, shape, rng):
        seen.append((kind, shape))
        return np.full(shape, 7, dtype=np.int64)

    cases = make_cases(_specs("ids:INT64:5"), 2, generators={"ids": gen})
    assert all((c.feeds["ids"] == 7).all() for c in cases)
    assert ("zeros", (2, 5)) in seen


def test_make_cases_raises_when_generator_returns_wrong_shape():
    with pytest.raises(ValueError, match="returned shape \\(3,\\), expected \\(1, 5\\)"):
        make_cases(_specs("ids:INT64:5"), 1, generators={"ids": lambda k, s, r: np.zeros(3)})


def test_make_cases_is_deterministic_when_seed_fixed():
    a = make_cases(_specs("x:FP32:4"), 4, seed=3)
    b = make_cases(_specs("x:FP32:4"), 4, seed=3)
    assert all(np.array_equal(x.feeds["x"], y.feeds["x"]) for x, y in zip(a, b, strict=True))


def _check(candidate, *, atol=1e-4, rtol=1e-3, specs=("x:FP32:4",), mbs=4, raise_on_failure=True):
    cases = make_cases(_specs(*specs), mbs)
    refs = [_identity(c.feeds) for c in cases]
    return check_parity(
        model_name="m",
        fmt="onnx",
        candidate=candidate,
        cases=cases,
        references=refs,
        output_names=["y"],
        atol=atol,
        rtol=rtol,
        raise_on_failure=raise_on_failure,
    )


def test_check_parity_records_every_case_when_candidate_matches():
    records = _check(_identity)
    assert len(records) == 9
    assert all(r.passed and r.max_abs_err == 0.0 and r.format == "onnx" for r in records)


def test_check_parity_passes_within_rtol_when_values_are_large():
    def scaled(feeds):
        return {"y": (feeds["x"] * (1 + 5e-4)).astype(np.float32)}

    records = _check(scaled)
    assert all(r.passed for r in records)
    assert max(r.max_abs_err for r in records) > 1e-4  # large case: beyond atol, within rtol
    assert max(r.max_rel_err for r in records) == pytest.approx(5e-4, rel=1e-2)


def test_check_parity_raises_parity_error_naming_output_batch_and_tolerance_when_off():
    def off(feeds):
        return {"y": feeds["x"] + 0.01}

    with pytest.raises(
        ParityError,
        match=r"model 'm': onnx output 'y' differs from PyTorch at batch \d+, case '\w+': max_abs_err 0\.01 > atol 0\.0001",
    ) as info:
        _check(off)
    records = info.value.records
    assert len(records) == 9
    assert not any(r.passed for r in records if r.case == "zeros")
    # 0.01 is within rtol of the large-magnitude case's values: those pass.
    assert all(r.passed for r in records if r.case == "large")


def test_check_parity_fails_float_noise_when_tolerance_is_zero():
    def noisy(feeds):
        return {"y": np.nextafter(feeds["x"], np.float32(np.inf))}

    with pytest.raises(ParityError, match="atol 0 \\+ rtol 0"):
        _check(noisy, atol=0.0, rtol=0.0)


def test_check_parity_returns_failed_records_when_not_raising():
    records = _check(lambda f: {"y": f["x"] + 1}, raise_on_failure=False)
    assert not any(r.passed for r in records)


def test_check_parity_treats_matching_nan_and_inf_as_equal_when_both_sides_agree():
    cases = make_cases(_specs("x:FP32:2"), 1)
    ref = [{"y": np.array([[np.nan, np.inf]], dtype=np.float32)} for _ in cases]
    records = check_parity(
        model_name="m",
        fmt="tensorrt",
        candidate=lambda f: {"y": np.array([[np.nan, np.inf]], np.float32)},
        cases=cases,
        references=ref,
        output_names=["y"],
    )
    assert all(r.passed and r.max_abs_err == 0.0 for r in records)


def test_check_parity_raises_when_shapes_differ():
    with pytest.raises(ParityError, match="has shape \\[1, 2\\], PyTorch gives \\[1, 4\\]"):
        _check(lambda f: {"y": f["x"][:, :2]})


def test_check_parity_raises_when_candidate_run_fails():
    def broken(feeds):
        raise RuntimeError("Got invalid dimensions for input: x")

    with pytest.raises(
        ParityError,
        match="onnx run failed at batch 1, case 'random': RuntimeError: Got invalid dimensions",
    ):
        _check(broken)


def test_check_parity_raises_when_output_missing():
    with pytest.raises(ParityError, match="has no output 'y'"):
        _check(lambda f: {"z": f["x"]})


def test_flatten_outputs_orders_tuples_and_dicts_when_nested():
    import torch

    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    flat = flatten_outputs({"first": a, "skip": None, "rest": (b, [c])})
    assert [float(t) for t in flat] == [0.0, 1.0, 2.0]


def test_flatten_outputs_raises_when_output_is_not_a_tensor():
    with pytest.raises(ParityError, match="model 'm' returned a str"):
        flatten_outputs("nope", model_name="m")


def _one_case_check(ref: np.ndarray, got: np.ndarray) -> bool:
    from rayfront.export.parity import ParityCase

    case = ParityCase("large", ref.shape[0], {"x": ref})
    records = check_parity(
        model_name="m",
        fmt="onnx",
        candidate=lambda feeds: {"y": got},
        cases=[case],
        references=[{"y": ref}],
        output_names=["y"],
        atol=1e-4,
        rtol=1e-3,
        raise_on_failure=False,
    )
    return records[0].passed


def test_check_parity_judges_a_cancelling_element_by_its_tensor_when_outputs_are_large():
    # Logits of magnitude 2e4 (large inputs): a near-zero element carries the rounding
    # error of its large summands, 6e-3 here, as two correct fp32 kernels differ.
    ref = np.array([[23286.0, -1.07, 512.0]], np.float32)
    got = ref + np.array([[0.0, 0.0059, 0.0]], np.float32)
    assert _one_case_check(ref, got)
    # The same error in a tensor of magnitude ~1 is a real difference.
    small = np.array([[0.9, -1.07, 0.5]], np.float32)
    assert not _one_case_check(small, small + np.array([[0.0, 0.0059, 0.0]], np.float32))
    # And an error of the tensor's own scale is caught however large the tensor.
    assert not _one_case_check(ref, ref + np.array([[0.0, 50.0, 0.0]], np.float32))
