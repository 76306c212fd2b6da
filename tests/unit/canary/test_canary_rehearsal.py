"""Rehearsal on recorded traffic: loading the log, replay pacing, scoring, persistence."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rayfront.canary.rehearsal import Outcome, Recorded, load_recorded, replay, score
from rayfront.errors import NotFoundError
from rayfront.payload_log import Payload, PayloadLog, PayloadLogSettings

LOGITS = np.array([[3.0, 0.1, 0.2]], np.float32)


def _recorded(n: int, gap_s: float = 0.0) -> list[Recorded]:
    return [
        Recorded(1000.0 + i * gap_s, {"x": np.full((1, 4), i, np.float32)}, {"logits": LOGITS})
        for i in range(n)
    ]


def _outcomes(n: int, latency: float, logits: np.ndarray = LOGITS, fail: int = 0) -> list[Outcome]:
    rng = np.random.default_rng(int(latency * 1e6))
    return [
        Outcome(False, latency)
        if i < fail
        else Outcome(True, float(latency * rng.lognormal(0, 0.1)), {"logits": logits})
        for i in range(n)
    ]


def _score(canary: list[Outcome], stable: list[Outcome], n: int = 100):
    return score(_recorded(n), canary, stable, canary_version="2", stable_version="1", speed=1.0)


def test_score_passes_a_candidate_that_answers_like_the_recording():
    result = _score(_outcomes(100, 0.010), _outcomes(100, 0.010))
    assert result.verdict == "pass" and result.agreement == 1.0 and result.errors == 0
    assert result.reasons == []
    assert result.canary_p50_s == pytest.approx(0.010, rel=0.1)


def test_score_fails_a_candidate_whose_answers_differ_from_the_recording():
    rotated = LOGITS[:, ::-1].copy()
    result = _score(_outcomes(100, 0.010, rotated), _outcomes(100, 0.010))
    assert result.verdict == "fail" and result.agreement == 0.0
    assert result.reasons == ["agreement with the recorded answers 0.00% < min_agreement 98.00%"]


def test_score_fails_a_slower_or_failing_candidate_and_names_why():
    slow = _score(_outcomes(100, 0.040), _outcomes(100, 0.010))
    assert slow.verdict == "fail" and "above the stable's on the same requests" in slow.reasons[0]
    broken = _score(_outcomes(100, 0.010, fail=3), _outcomes(100, 0.010))
    assert broken.reasons[0] == "3 of 100 replayed requests failed on the candidate"


def test_replay_keeps_the_recorded_pace_scaled_by_speed():
    sent: list[tuple[str, float]] = []

    def send(version: str, inputs: dict) -> Outcome:
        sent.append((version, time.monotonic()))
        return Outcome(True, 0.001, {"logits": LOGITS})

    start = time.monotonic()
    canary, stable = replay(_recorded(5, gap_s=0.2), send, canary="2", stable="1", speed=2.0)
    elapsed = time.monotonic() - start
    assert len(canary) == len(stable) == 5
    assert sorted(v for v, _ in sent) == ["1"] * 5 + ["2"] * 5
    assert 0.35 <= elapsed < 1.5  # 4 gaps of 0.2 s at 2x: 0.4 s


def test_load_recorded_takes_the_stables_complete_records_newest_last(tmp_path):
    settings = PayloadLogSettings(directory=str(tmp_path), sample_ratio=1.0, max_tensor_kb=1)
    log = PayloadLog(settings, process="p")
    for i, version in enumerate(["1", "2", "1", "1"]):
        rows = 1024 if i == 3 else 1  # the last one is too big to keep its bytes
        log.record(
            Payload(
                "m", version, str(i), None, 0.01,
                {"x": np.full((rows, 1), i, np.float32)}, {"y": np.zeros((rows, 1), np.float32)},
            )
        )  # fmt: skip
    log.flush()
    recorded = load_recorded(tmp_path, "m", "1", max_requests=10)
    assert [int(r.inputs["x"][0, 0]) for r in recorded] == [0, 2]
    with pytest.raises(
        NotFoundError, match="no replayable payload log records of model 'm' version 7"
    ):
        load_recorded(tmp_path, "m", "7", max_requests=10)
    log.close()


def test_manager_keeps_the_newest_rehearsals_and_refuses_unknown_versions(make_manager):
    from rayfront.errors import NotFoundError as NF

    manager = make_manager()
    result = _score(_outcomes(100, 0.010), _outcomes(100, 0.010))
    for _ in range(12):
        manager.record_rehearsal("digits", result)
    status = manager.status("digits")
    assert len(status["rehearsals"]) == 10 and status["rehearsals"][-1]["verdict"] == "pass"
    with pytest.raises(NF):
        manager.record_rehearsal("digits", result.model_copy(update={"canary_version": "9"}))
