"""Poison isolation: a request that makes the runtime fail its batch fails alone.

Twelve clients send valid MiniLM sentences while one sends token ids beyond the
vocabulary, which makes ONNX Runtime's Gather fail the whole batch it lands in. The
batcher bisects the failed batch, so every valid request gets its own right answer, the
poisoner gets a clear 400 about its own input, and the isolations are counted.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = [pytest.mark.ray, pytest.mark.slow]

VOCAB = 30522
VALID_CLIENTS = 12
REQUESTS_EACH = 40


def _isolations(server) -> float:
    text = urllib.request.urlopen(f"http://{server.http_url}/metrics", timeout=10).read().decode()
    pattern = r'^rayfront_batch_isolations_total\{[^}]*model="minilm"[^}]*\} ([0-9.e+]+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


def _inputs(ids: np.ndarray) -> list[httpclient.InferInput]:
    out = []
    for name, arr in (("input_ids", ids), ("attention_mask", np.ones_like(ids))):
        inp = httpclient.InferInput(name, list(arr.shape), "INT64")
        inp.set_data_from_numpy(arr)
        out.append(inp)
    return out


def test_poisoned_request_fails_alone_and_batchmates_get_their_answers(server, ort_sessions):
    from rayfront.export.demos.minilm import tokenize

    session = ort_sessions["minilm"]
    sentences = [f"client {c} asks question number {i}" for c in range(12) for i in range(4)]
    before = _isolations(server)

    def valid(client: int) -> list[str]:
        problems = []
        http = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
        for i in range(REQUESTS_EACH):
            tokens = tokenize([sentences[(client * 4 + i) % len(sentences)]])
            ids = tokens["input_ids"].astype(np.int64)
            try:
                got = http.infer("minilm", _inputs(ids)).as_numpy("embedding")
            except InferenceServerException as exc:
                problems.append(f"valid request failed: {exc}")
                continue
            want = session.run(
                ["embedding"],
                {"input_ids": ids, "attention_mask": np.ones_like(ids)},
            )[0]
            if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
                problems.append("valid request got a wrong answer")
        return problems

    def poisoner() -> list[str]:
        errors = []
        http = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
        for i in range(REQUESTS_EACH):
            # Same length as the valid sentences, so it can share their batches.
            ids = tokenize([sentences[i % len(sentences)]])["input_ids"].astype(np.int64)
            ids[0, 1] = VOCAB + 7000 + i
            try:
                http.infer("minilm", _inputs(ids))
                errors.append("poisoned request succeeded")
            except InferenceServerException as exc:
                errors.append(f"{exc.status()}|{exc.message()}")
        return errors

    with concurrent.futures.ThreadPoolExecutor(VALID_CLIENTS + 1) as pool:
        bad = pool.submit(poisoner)
        good = [pool.submit(valid, c) for c in range(VALID_CLIENTS)]
        problems = [p for f in good for p in f.result(timeout=300)]
        poisoned = bad.result(timeout=300)

    assert problems == [], problems[:5]
    assert len(poisoned) == REQUESTS_EACH
    for i, answer in enumerate(poisoned):
        status, _, message = answer.partition("|")
        assert status == "400", answer
        assert "minilm" in message, answer
        # Only its own id may appear in its message: never another request's values.
        quoted = {int(n) for n in re.findall(r"\b\d{5,}\b", message)}
        assert quoted <= {VOCAB + 7000 + i, VOCAB, VOCAB - 1}, answer
    # Some poisoned requests shared a batch with valid ones (12 clients keep batches
    # full), so the batcher had to split at least one. Replicas publish their counters
    # every second.
    deadline = time.monotonic() + 15
    while _isolations(server) <= before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _isolations(server) > before
