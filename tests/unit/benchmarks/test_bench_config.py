"""Parsing of the sweep's CLI values: batching settings, durations, lists, SweepConfig rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import make_config
from pydantic import ValidationError

from rayfront.benchmarks.run.sweep_config import (
    BatchingSetting,
    parse_duration,
    parse_ints,
    parse_list,
)
from rayfront.errors import InvalidArgumentError


@pytest.mark.parametrize(
    ("text", "mb", "delay", "replicas"),
    [("off", None, 0, 1), ("OFF:x2", None, 0, 2), ("32:1000", 32, 1000, 1), ("8:0:x3", 8, 0, 3)],
)
def test_batching_setting_parses_when_spec_is_valid(
    text: str, mb: int | None, delay: int, replicas: int
) -> None:
    s = BatchingSetting.parse(text)
    assert (s.max_batch_size, s.max_queue_delay_us, s.replicas) == (mb, delay, replicas)
    assert s.enabled == (mb is not None)
    assert BatchingSetting.parse(s.label) == s


@pytest.mark.parametrize("text", ["on", "32", "32:abc", "0:100", ":100", "off:1000", "16:500:2"])
def test_batching_setting_raises_when_spec_is_malformed(text: str) -> None:
    with pytest.raises(
        (InvalidArgumentError, ValidationError), match=r"batching setting|greater than or equal"
    ):
        BatchingSetting.parse(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("3", 3.0), (" 1.5s ", 1.5)]
)
def test_parse_duration_converts_when_unit_is_known(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10h", "fast", "-1s", "0"])
def test_parse_duration_raises_when_text_is_not_a_duration(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="duration"):
        parse_duration(text)


def test_parse_ints_raises_when_an_item_is_not_positive() -> None:
    assert parse_ints("1, 4,16", "--concurrency") == [1, 4, 16]
    with pytest.raises(InvalidArgumentError, match=r"--concurrency: '0' is not a positive integer"):
        parse_ints("1,0", "--concurrency")
    with pytest.raises(InvalidArgumentError, match="--models: expected a comma-separated list"):
        parse_list(" , ", "--models")


def test_sweep_config_orders_targets_and_levels_when_given_unsorted(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, targets=("rayfront-grpc", "raw", "bare"), concurrency=(16, 1, 4, 4))
    assert cfg.targets == ("raw", "bare", "rayfront-grpc")
    assert cfg.concurrency == (1, 4, 16)
    assert cfg.needs_ray


def test_sweep_config_raises_when_target_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"unknown targets \['triton'\]"):
        make_config(tmp_path, targets=("raw", "triton"))


def test_sweep_config_raises_when_batched_target_has_no_setting(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least one batching setting"):
        make_config(tmp_path, targets=("batcher",), batching=())


def test_sweep_config_does_not_need_ray_when_only_runtime_targets(tmp_path: Path) -> None:
    assert not make_config(tmp_path, targets=("raw", "batcher")).needs_ray
