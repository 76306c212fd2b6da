"""Bad models: one that cannot load never stops the others, and validate sees it first.

The repository holds the good digits model and three that fail in each way we can
produce: a config that does not parse, a model file that is not ONNX, and a config
whose replica raises while starting on this host (KIND_GPU without a CUDA provider).

* ``rayfront repo validate`` flags exactly those three; with ``--no-load`` (files only)
  it misses the third, which is why loading is its default.
* ``rayfront serve`` starts, serves digits, and lists each bad model as UNAVAILABLE
  with its reason; requests to them get a clear 503 / 404, never a hang.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from serving_harness import start_server, stop_server
from tritonclient.utils import InferenceServerException

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BAD = ("badconfig", "notonnx", "gpuonly")


def _repository(model_repository: Path, root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    shutil.copytree(model_repository / "digits", repo / "digits")
    for name in BAD:
        shutil.copytree(model_repository / "digits", repo / name)
        config = repo / name / "config.pbtxt"
        text = config.read_text().replace('name: "digits"', f'name: "{name}"')
        if name == "badconfig":
            text += "\nthis is not protobuf text {\n"
        elif name == "gpuonly":
            text += "\ninstance_group [ { count: 1 kind: KIND_GPU } ]\n"
        config.write_text(text)
    (repo / "notonnx" / "1" / "model.onnx").write_bytes(b"\x00 not an ONNX graph")
    (repo / "notonnx" / "1" / "rayfront.json").unlink()  # no parity record to disagree with
    return repo


def _validate(repo: Path, *extra: str) -> tuple[int, dict[str, bool]]:
    run = subprocess.run(
        [sys.executable, "-m", "rayfront", "repo", "validate", "-r", str(repo), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    doc = json.loads(run.stdout)
    return run.returncode, {m["name"]: m["ok"] for m in doc["models"]}


def test_bad_models_are_reported_and_never_stop_the_good_one(
    model_repository, ort_sessions, tmp_path
):
    repo = _repository(model_repository, tmp_path)

    code, ok = _validate(repo)
    assert code == 1
    assert ok == {"digits": True, "badconfig": False, "notonnx": False, "gpuonly": False}
    code, ok = _validate(repo, "--no-load")
    assert ok["gpuonly"] is True  # files alone look fine: only loading finds it

    server = start_server(repo, tmp_path / "serve.log")
    try:
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
        x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
        inp = httpclient.InferInput("pixels", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("digits", [inp]).as_numpy("logits")
        want = ort_sessions["digits"].run(["logits"], {"pixels": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["digits"]["state"] == "READY"
        for name in BAD:
            assert index[name]["state"] == "UNAVAILABLE", index[name]
            assert index[name].get("reason"), index[name]
            assert not client.is_model_ready(name)
            with pytest.raises(InferenceServerException) as info:
                bad = httpclient.InferInput("pixels", list(x.shape), "FP32")
                bad.set_data_from_numpy(x)
                client.infer(name, [bad])
            assert str(info.value.status()) in ("503", "404"), info.value
            assert name in str(info.value)
        assert "waiting for a GPU" in index["gpuonly"]["reason"]
    finally:
        stop_server(server)
