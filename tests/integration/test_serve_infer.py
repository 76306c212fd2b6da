"""Inference through real Ray Serve with unmodified tritonclient, checked against ORT."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from rayfront.export.demos.digits import load_data

    data = load_data()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(data.x_test), n, replace=False)
    return data.x_test[idx].astype(np.float32), data.y_test[idx]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_digits_matches_onnxruntime_when_sent_binary_or_json(server, ort_sessions, binary):
    images, labels = _digits(16)
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("pixels", list(images.shape), "FP32")
    inp.set_data_from_numpy(images, binary_data=binary)
    outs = [
        httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("logits", "probabilities")
    ]
    result = client.infer("digits", [inp], outputs=outs, request_id="req-7")
    ref_logits, ref_probs = ort_sessions["digits"].run(None, {"pixels": images})
    np.testing.assert_allclose(result.as_numpy("logits"), ref_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("probabilities"), ref_probs, rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "req-7"
    # A real model, not a stand-in: held-out digits are classified correctly.
    assert (result.as_numpy("logits").argmax(1) == labels).mean() >= 0.9


def test_http_returns_only_requested_output_when_outputs_filtered(server):
    images, _ = _digits(2)
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("pixels", list(images.shape), "FP32")
    inp.set_data_from_numpy(images)
    result = client.infer(
        "digits", [inp], outputs=[httpclient.InferRequestedOutput("probabilities")]
    )
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["probabilities"]


def test_http_gzip_request_and_response_when_compression_asked(server, ort_sessions):
    images, _ = _digits(4)
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("pixels", list(images.shape), "FP32")
    inp.set_data_from_numpy(images)
    result = client.infer(
        "digits", [inp], request_compression_algorithm="gzip", response_compression_algorithm="gzip"
    )
    np.testing.assert_allclose(
        result.as_numpy("logits"),
        ort_sessions["digits"].run(["logits"], {"pixels": images})[0],
        rtol=1e-5,
        atol=1e-5,
    )


def test_grpc_minilm_matches_onnxruntime_when_sentences_encoded(server, ort_sessions):
    from rayfront.export.demos.minilm import tokenize

    tokens = tokenize(
        ["A man is playing a guitar.", "Someone plays an instrument.", "Stocks fell."]
    )
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, arr in tokens.items():
        inp = grpcclient.InferInput(name, list(arr.shape), "INT64")
        inp.set_data_from_numpy(arr.astype(np.int64))
        inputs.append(inp)
    result = client.infer("minilm", inputs)
    emb = result.as_numpy("embedding")
    ref = ort_sessions["minilm"].run(
        ["embedding"], {k: v.astype(np.int64) for k, v in tokens.items()}
    )[0]
    np.testing.assert_allclose(emb, ref, rtol=1e-4, atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2]  # related sentences are closer: real weights


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_two_input_model_matches_onnxruntime_when_mixed_dtypes(server, ort_sessions, protocol):
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((3, 4)).astype(np.float32)
    ids = rng.integers(0, 16, size=(3, 5)).astype(np.int64)
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    a = mod.InferInput("features", [3, 4], "FP32")
    a.set_data_from_numpy(feats)
    b = mod.InferInput("ids", [3, 5], "INT64")
    b.set_data_from_numpy(ids)
    result = client.infer("multi", [a, b])
    ref_scores, ref_nonzero = ort_sessions["multi"].run(
        ["scores", "nonzero"], {"features": feats, "ids": ids}
    )
    np.testing.assert_allclose(result.as_numpy("scores"), ref_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("nonzero"), ref_nonzero)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_metadata_config_ready_and_stats_when_queried(server, protocol):
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "1")
    meta = client.get_model_metadata("digits")
    config = client.get_model_config("digits")
    stats = client.get_inference_statistics("digits")
    index = client.get_model_repository_index()
    if protocol == "http":
        assert meta["inputs"][0] == {"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
        assert config["max_batch_size"] == 64 and config["platform"] == "onnxruntime_onnx"
        assert stats["model_stats"][0]["name"] == "digits"
        assert {m["name"] for m in index} >= {"digits", "minilm", "multi"}
    else:
        assert meta.inputs[0].name == "pixels" and list(meta.inputs[0].shape) == [-1, 1, 8, 8]
        assert config.config.max_batch_size == 64
        assert stats.model_stats[0].name == "digits"
        assert {m.name for m in index.models} >= {"digits", "minilm", "multi"}


def _metric(text: str, name: str, model: str) -> float:
    pattern = rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+]+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


def _metrics(server) -> str:
    return urllib.request.urlopen(f"http://{server.http_url}/metrics", timeout=10).read().decode()


def _settled_metrics(server, model: str = "digits", timeout_s: float = 15.0) -> str:
    """Metrics once the replicas' telemetry (published every second) has caught up.

    Executions of an earlier test can land on the board after this test starts; a
    snapshot taken before they do would count them as this test's.
    """
    deadline = time.monotonic() + timeout_s
    text = _metrics(server)
    while time.monotonic() < deadline:
        time.sleep(1.5)
        later = _metrics(server)
        if _metric(later, "rayfront_batch_size_sum", model) == _metric(
            text, "rayfront_batch_size_sum", model
        ):
            return later
        text = later
    return text


def test_concurrent_requests_each_get_own_answer_when_batched(server, ort_sessions):
    """200 concurrent distinct requests: every answer is the request's own, and batches form."""
    import tritonclient.http.aio as aioclient

    rng = np.random.default_rng(11)
    images = rng.random((200, 1, 1, 8, 8), dtype=np.float32)
    before = _settled_metrics(server)

    async def run() -> list[np.ndarray]:
        client = aioclient.InferenceServerClient(server.http_url, conn_limit=200)
        try:

            async def one(img: np.ndarray) -> np.ndarray:
                inp = aioclient.InferInput("pixels", list(img.shape), "FP32")
                inp.set_data_from_numpy(img)
                res = await client.infer(
                    "digits", [inp], outputs=[aioclient.InferRequestedOutput("logits")]
                )
                return res.as_numpy("logits")

            return await asyncio.gather(*(one(img) for img in images))
        finally:
            await client.close()

    results = asyncio.run(run())
    ref = ort_sessions["digits"].run(["logits"], {"pixels": images.reshape(200, 1, 8, 8)})[0]
    for i, got in enumerate(results):
        np.testing.assert_allclose(got[0], ref[i], rtol=1e-5, atol=1e-5, err_msg=f"request {i}")
    # The ingress counts requests at once; the replica, where batches form, publishes its
    # executions on the telemetry board every second: poll until both have landed.
    deadline = time.monotonic() + 15
    while True:
        after = _metrics(server)
        requests = _metric(after, "nv_inference_request_success", "digits") - _metric(
            before, "nv_inference_request_success", "digits"
        )
        executions = _metric(after, "nv_inference_exec_count", "digits") - _metric(
            before, "nv_inference_exec_count", "digits"
        )
        rows = _metric(after, "rayfront_batch_size_sum", "digits") - _metric(
            before, "rayfront_batch_size_sum", "digits"
        )
        if (requests == 200 and rows == 200) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert requests == 200 and rows == 200
    assert 'rayfront_process="replica-' in after and 'rayfront_process="ingress-' in after
    assert executions < requests, f"no batching: {executions} executions for {requests} requests"


def test_grafana_dashboard_queries_series_the_live_server_exports(server):
    """Every series the dashboard (``rayfront dashboard``) queries is on the server's own
    merged /metrics, declared by a # TYPE line or present as samples."""
    from rayfront.dashboard import metric_names

    text = _metrics(server)
    declared: set[str] = set()
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("", "_total")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            declared |= {name + s for s in suffixes.get(kind, ("",))}
        elif line and not line.startswith("#"):
            declared.add(line.split("{", 1)[0].split(" ", 1)[0])
    assert metric_names() - declared == set()
