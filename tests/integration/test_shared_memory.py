"""Triton's system shared-memory extension against the real ``rayfront serve``.

Unmodified ``tritonclient.utils.shared_memory`` makes the regions, as a client on the
server's host would; the digits model's input and both outputs live in them. Every answer
is checked against ONNX Runtime on the same rows, and every bad region is a 400 /
INVALID_ARGUMENT naming the region, after which the next request is answered right.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROWS = 4
IN_BYTES = ROWS * 64 * 4  # FP32 [4, 1, 8, 8]
OUT_BYTES = ROWS * 10 * 4  # FP32 [4, 10], each output


def _mod(protocol: str):
    return httpclient if protocol == "http" else grpcclient


def _client(server, protocol: str):
    if protocol == "http":
        return httpclient.InferenceServerClient(server.http_url)
    return grpcclient.InferenceServerClient(server.grpc_url)


@pytest.fixture
def regions() -> Iterator[tuple[str, dict[str, object]]]:
    tag = f"{os.getpid()}_{os.urandom(3).hex()}"
    made = {
        "in": shm.create_shared_memory_region(f"in_{tag}", f"/rfi_in_{tag}", IN_BYTES),
        "out": shm.create_shared_memory_region(f"out_{tag}", f"/rfi_out_{tag}", 2 * OUT_BYTES),
    }
    yield tag, made
    for handle in made.values():
        shm.destroy_shared_memory_region(handle)


def _images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((ROWS, 1, 8, 8), dtype=np.float32)


def _request(
    mod,
    tag: str,
    *,
    in_bytes: int = IN_BYTES,
    out_bytes: int = OUT_BYTES,
    in_region: str | None = None,
    out_offset: int = 0,
):
    inp = mod.InferInput("pixels", [ROWS, 1, 8, 8], "FP32")
    inp.set_shared_memory(in_region or f"in_{tag}", in_bytes)
    outs = [mod.InferRequestedOutput("logits"), mod.InferRequestedOutput("probabilities")]
    outs[0].set_shared_memory(f"out_{tag}", out_bytes, offset=out_offset)
    outs[1].set_shared_memory(f"out_{tag}", out_bytes, offset=out_offset + OUT_BYTES)
    return [inp], outs


def _register(client, tag: str) -> None:
    client.register_system_shared_memory(f"in_{tag}", f"/rfi_in_{tag}", IN_BYTES)
    client.register_system_shared_memory(f"out_{tag}", f"/rfi_out_{tag}", 2 * OUT_BYTES)


def _check_answer(made, ort_sessions, images: np.ndarray) -> None:
    logits = shm.get_contents_as_numpy(made["out"], np.float32, [ROWS, 10])
    probs = shm.get_contents_as_numpy(made["out"], np.float32, [ROWS, 10], offset=OUT_BYTES)
    ref_logits, ref_probs = ort_sessions["digits"].run(None, {"pixels": images})
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_serve_reads_and_writes_system_shared_memory_when_client_registers_regions(
    server, ort_sessions, regions, protocol
):
    client, mod = _client(server, protocol), _mod(protocol)
    tag, made = regions
    _register(client, tag)
    try:
        for seed in range(3):  # regions are reused request after request, as clients do
            images = _images(seed)
            shm.set_shared_memory_region(made["in"], [images])
            inputs, outputs = _request(mod, tag)
            result = client.infer("digits", inputs, outputs=outputs)
            # The answer says where it wrote, and carries no tensor bytes of its own.
            assert _written_to(result, "logits", protocol) == f"out_{tag}"
            _check_answer(made, ort_sessions, images)
        status = client.get_system_shared_memory_status()
        names = {r["name"] for r in status} if protocol == "http" else set(status.regions)
        assert {f"in_{tag}", f"out_{tag}"} <= names
    finally:
        client.unregister_system_shared_memory(f"in_{tag}")
        client.unregister_system_shared_memory(f"out_{tag}")
    status = client.get_system_shared_memory_status()
    names = {r["name"] for r in status} if protocol == "http" else set(status.regions)
    assert f"in_{tag}" not in names


def _written_to(result, output: str, protocol: str) -> str:
    if protocol == "http":
        out = result.get_output("logits")
        assert "data" not in out and "binary_data_size" not in out.get("parameters", {})
        return out["parameters"]["shared_memory_region"]
    out = result.get_output(output)
    assert len(result.get_response().raw_output_contents) in (0, 2)
    assert all(len(raw) == 0 for raw in result.get_response().raw_output_contents)
    return out.parameters["shared_memory_region"].string_param


BAD = {
    "unknown region": dict(in_region="nowhere"),
    "input size mismatch": dict(in_bytes=IN_BYTES - 4),
    "output offset past the end": dict(out_offset=2 * OUT_BYTES),
    "output too small": dict(out_bytes=OUT_BYTES - 4),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_serve_refuses_bad_region_by_name_and_keeps_serving_when_request_is_wrong(
    server, ort_sessions, regions, protocol, case
):
    client, mod = _client(server, protocol), _mod(protocol)
    tag, made = regions
    _register(client, tag)
    try:
        images = _images(7)
        shm.set_shared_memory_region(made["in"], [images])
        inputs, outputs = _request(mod, tag, **BAD[case])
        with pytest.raises(InferenceServerException) as err:
            client.infer("digits", inputs, outputs=outputs)
        named = BAD[case].get("in_region") or f"_{tag}"
        assert named in err.value.message(), err.value.message()
        status = err.value.status()
        assert status in ("400", "StatusCode.INVALID_ARGUMENT"), (status, err.value.message())

        # The server is unharmed: the same regions, used right, give the right answer.
        inputs, outputs = _request(mod, tag)
        client.infer("digits", inputs, outputs=outputs)
        _check_answer(made, ort_sessions, images)
    finally:
        client.unregister_system_shared_memory(f"in_{tag}")
        client.unregister_system_shared_memory(f"out_{tag}")


def test_serve_refuses_unregistered_region_when_client_unregistered_it(server, regions):
    client = _client(server, "http")
    tag, made = regions
    _register(client, tag)
    client.unregister_system_shared_memory(f"in_{tag}")
    try:
        shm.set_shared_memory_region(made["in"], [_images(1)])
        inputs, outputs = _request(httpclient, tag)
        with pytest.raises(InferenceServerException, match=f"in_{tag}") as err:
            client.infer("digits", inputs, outputs=outputs)
        assert err.value.status() == "400"
    finally:
        client.unregister_system_shared_memory()
