"""Shadow output comparison: top-1 for classifiers, tolerances and cosine for regressors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rayfront.canary.compare import ShadowStats, compare_outputs, resolve_kind


def test_compare_counts_top1_agreement_when_one_row_flips_class():
    stable = np.array([[3.0, 1, 0], [0, 2, 1], [0, 0, 5], [1, 4, 0]], dtype=np.float32)
    canary = stable.copy()
    canary[2] = [9, 0, 0]  # top-1 changes from class 2 to class 0
    canary[0] = [2.5, 1, 0]  # values move, top-1 stays
    cmp = compare_outputs({"logits": stable}, {"logits": canary})
    assert cmp.kinds == ("classifier",)
    assert (cmp.rows, cmp.agree_rows) == (4, 3)
    assert cmp.agreement == pytest.approx(0.75)
    assert cmp.max_abs == pytest.approx(9.0)


def test_resolve_kind_detects_probabilities_when_rows_sum_to_one():
    probs = np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    assert resolve_kind("output_0", probs) == "classifier"
    emb = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    assert resolve_kind("sentence_embedding", emb) == "regression"
    assert resolve_kind("sentence_embedding", emb, "classifier") == "classifier"
    assert resolve_kind("logits", emb, "regression") == "regression"
    assert resolve_kind("label", np.array([1, 2], dtype=np.int64)) == "exact"


def test_compare_reports_max_abs_rel_and_cosine_when_regression_outputs_differ():
    stable = np.array([[1.0, 2.0], [4.0, -2.0]])
    canary = np.array([[1.0, 2.1], [4.0, -2.0]])
    cmp = compare_outputs({"y": stable}, {"y": canary}, kind="regression", atol=1e-3, rtol=1e-3)
    assert cmp.kinds == ("regression",)
    assert (cmp.rows, cmp.agree_rows) == (2, 1)
    assert cmp.max_abs == pytest.approx(0.1)
    assert cmp.max_rel == pytest.approx(0.05)
    cos0 = (1 * 1 + 2 * 2.1) / (np.hypot(1, 2) * np.hypot(1, 2.1))
    assert cmp.min_cosine == pytest.approx(cos0)
    assert cmp.cosine_rows == 2


def test_compare_treats_rows_as_agreeing_when_within_tolerance():
    stable = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    canary = stable + 1e-6
    cmp = compare_outputs({"emb": stable}, {"emb": canary}, atol=1e-4, rtol=1e-3)
    assert cmp.agreement == 1.0


def test_compare_marks_all_rows_disagreeing_when_shapes_differ():
    cmp = compare_outputs({"y": np.zeros((3, 2))}, {"y": np.zeros((3, 4))})
    assert (cmp.rows, cmp.agree_rows) == (3, 0)
    assert "stable shape [3, 2], candidate [3, 4]" in cmp.note


def test_compare_marks_rows_disagreeing_when_candidate_lacks_output():
    cmp = compare_outputs({"a": np.zeros((2, 3)), "b": np.zeros((2, 1))}, {"a": np.zeros((2, 3))})
    assert (cmp.rows, cmp.agree_rows) == (2, 0)
    assert "output 'b' missing from candidate" in cmp.note


def test_compare_requires_every_output_to_agree_when_model_has_several():
    stable = {"cls": np.array([[1.0, 0.0], [0.0, 1.0]]), "box": np.array([[1.0], [2.0]])}
    canary = {"cls": np.array([[1.0, 0.0], [0.0, 1.0]]), "box": np.array([[1.0], [2.5]])}
    cmp = compare_outputs(stable, canary, atol=1e-3, rtol=1e-3)
    assert (cmp.rows, cmp.agree_rows) == (2, 1)


def test_compare_uses_equality_when_outputs_are_integers_or_bytes():
    cmp = compare_outputs({"id": np.array([1, 2, 3])}, {"id": np.array([1, 0, 3])})
    assert (cmp.rows, cmp.agree_rows, cmp.kinds) == (3, 2, ("exact",))
    text = compare_outputs(
        {"t": np.array([b"a", b"b"], dtype=object)}, {"t": np.array([b"a", b"c"], dtype=object)}
    )
    assert (text.rows, text.agree_rows) == (2, 1)


def test_shadow_stats_aggregate_and_serialise_when_fed_comparisons():
    stats = ShadowStats()
    assert stats.agreement is None
    stats.add(compare_outputs({"logits": np.eye(3)}, {"logits": np.eye(3)}))
    stats.add(compare_outputs({"logits": np.eye(2)}, {"logits": np.eye(2)[::-1]}))
    stats.add_error()
    assert (stats.comparisons, stats.rows, stats.agree_rows, stats.errors) == (2, 5, 3, 1)
    assert stats.agreement == pytest.approx(0.6)
    snap = stats.copy()
    stats.reset()
    assert stats.rows == 0 and snap.rows == 5
    decoded = json.loads(json.dumps(snap.to_dict()))
    assert decoded["agreement"] == pytest.approx(0.6)
    assert decoded["kinds"] == ["classifier"]


def test_shadow_stats_report_none_when_difference_is_infinite():
    stats = ShadowStats()
    stats.add(compare_outputs({"y": np.array([[np.inf]])}, {"y": np.array([[0.0]])}))
    assert json.loads(json.dumps(stats.to_dict()))["max_abs"] is None
