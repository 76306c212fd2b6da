"""The ingress-bandwidth benchmark's pieces that need no server: its model and its report."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from rayfront.benchmarks.load.fleet import _expected
from rayfront.benchmarks.run import bandwidth
from rayfront.repository.layout import Repository


def test_ingress_model_averages_each_channel_when_built(tmp_path):
    path = bandwidth.build_repository(tmp_path / "repo")
    spec = Repository(tmp_path / "repo").spec(bandwidth.MODEL)
    assert spec.inputs[0].dims == bandwidth.SHAPE and spec.max_batch_size == bandwidth.MAX_BATCH
    x = np.random.default_rng(0).random((2, *bandwidth.SHAPE), dtype=np.float32)
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    # The clients check every answer against this expectation.
    np.testing.assert_allclose(y, _expected("mean23", x), rtol=1e-5)
    assert bandwidth.IMAGE_BYTES == 602_112


def _doc():
    def p(target, n, proto, img_s):
        return bandwidth._point(target, n, proto, {"req_s": img_s, "errors": 0})

    return {
        "meta": {
            "shape": [3, 224, 224],
            "image_bytes": 602_112,
            "cpus": 2,
            "clients": 2,
            "conc_per_client": 8,
            "secs": 1.0,
        },
        "points": [
            bandwidth._point("memcpy", 0, "-", {"img_s": 10_000.0}),
            p("bare", 1, "http", 400.0),
            p("rayfront", 1, "http", 300.0),
            p("rayfront", 1, "shm", 800.0),
            p("bare", 2, "http", 600.0),
            p("rayfront", 2, "grpc", 900.0),
        ],
    }


def test_ingress_ratios_compare_with_bare_of_same_process_count_and_memcpy():
    rows = {(r["target"], r["ingress"], r["proto"]): r for r in bandwidth.ratios(_doc())}
    assert rows[("rayfront", 1, "http")]["x_bare"] == pytest.approx(0.75)
    assert rows[("rayfront", 2, "grpc")]["x_bare"] == pytest.approx(1.5)
    assert rows[("rayfront", 1, "shm")]["x_memcpy"] == pytest.approx(0.08)
    assert rows[("rayfront", 1, "shm")]["mb_s"] == pytest.approx(800 * 602_112 / 1e6)
    assert ("memcpy", 0, "-") not in rows


def test_ingress_outputs_write_csv_markdown_and_plot(tmp_path):
    doc = _doc()
    bandwidth.write_outputs(doc, tmp_path)
    md = (tmp_path / "ingress.md").read_text()
    assert "| rayfront | 2 | grpc | 900 | 542 | 1.50 | 0.090 |" in md
    assert "memcpy: 10,000 img/s" in md
    lines = (tmp_path / "ingress.csv").read_text().splitlines()
    assert lines[0].startswith("target,ingress,proto,img_s,mb_s,x_bare")
    assert len(lines) == 1 + len(doc["points"])
    assert (tmp_path / "ingress.png").read_bytes()[:4] == b"\x89PNG"
