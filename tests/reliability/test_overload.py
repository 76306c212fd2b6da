"""Overload: a full queue answers 503 with Retry-After at once; accepted requests are right.

``minilm_q`` holds at most two queued requests. Twenty-four clients send long sentences at
once over raw HTTP (so the headers can be read): the overflow gets 503 naming the model
and its queue, with ``Retry-After``, and every request that got in is answered correctly.
"""

from __future__ import annotations

import concurrent.futures
import http.client

import numpy as np
import orjson
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_full_queue_refuses_with_retry_after_and_accepted_requests_are_right(server, ort_sessions):
    from rayfront.export.demos.minilm import tokenize

    tokens = {k: v.astype(np.int64) for k, v in tokenize(["a long sentence " * 40] * 16).items()}
    body = orjson.dumps(
        {
            "inputs": [
                {"name": k, "shape": list(v.shape), "datatype": "INT64", "data": v.ravel().tolist()}
                for k, v in tokens.items()
            ]
        }
    )
    want = ort_sessions["minilm"].run(["embedding"], tokens)[0]
    host, port = server.http_url.split(":")

    def one(_: int) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            conn.request(
                "POST", "/v2/models/minilm_q/infer", body, {"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(one, range(24)))
    statuses = sorted(status for status, _, _ in answers)
    assert 200 in statuses and 503 in statuses, statuses
    assert set(statuses) <= {200, 503}, statuses
    for status, headers, out in answers:
        if status == 503:
            assert headers.get("retry-after") == "1", headers
            assert "minilm_q" in orjson.loads(out)["error"] and "queue is full" in out.decode()
        else:
            got = np.asarray(orjson.loads(out)["outputs"][0]["data"], dtype=np.float32)
            np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-5)
