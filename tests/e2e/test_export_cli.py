"""`rayfront export` as a user runs it: a subprocess per command, a real repository on disk.

Exports the two demo models and the two-input/two-output mixed-dtype model, checks the
Triton layout, config.pbtxt, sidecar parity numbers and that `rayfront repo validate`
accepts the result; then every bad input must end in one `error:` line, exit code 1, no
traceback, and a repository byte-identical to before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

DIGITS = [
    "rayfront.export.demos.digits:factory",
    "--name",
    "digits",
    "--input",
    "pixels:FP32:1,8,8",
    "--output",
    "logits",
    "--output",
    "probabilities",
    "--max-batch-size",
    "32",
]
MULTI = [
    "rayfront.export.demos.multi:factory",
    "--name",
    "multi",
    "--input",
    "features:FP32:4",
    "--input",
    "ids:INT64:-1",
    "--output",
    "scores:FP32:3",
    "--output",
    "nonzero:INT64:1",
    "--max-batch-size",
    "8",
    "--torchscript",
    "--precision",
    "fp16",
]
MINILM = [
    "rayfront.export.demos.minilm:factory",
    "--name",
    "minilm",
    "--input",
    "input_ids:INT64:-1",
    "--input",
    "attention_mask:INT64:-1",
    "--output",
    "embedding:FP32:384",
    "--max-batch-size",
    "8",
    "--trt-shape",
    "input_ids:1/64/128",
    "--trt-shape",
    "attention_mask:1/64/128",
]

BAD_MODELS = textwrap.dedent(
    """
    import torch

    def raising():
        raise RuntimeError("checkpoint weights.bin not found")

    class Diverge(torch.nn.Module):
        def forward(self, pixels):
            if torch.onnx.is_in_onnx_export():
                return pixels.flatten(1) * 2
            return pixels.flatten(1)

    def diverging():
        return Diverge()

    class Noisy(torch.nn.Module):
        # exp/log/softmax round-trips differ in the last float bits between torch and ORT.
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)

        def forward(self, pixels):
            return self.linear(pixels.flatten(1)).exp().log().softmax(-1)

    def noisy():
        torch.manual_seed(0)
        return Noisy()

    @torch.library.custom_op("rfe2e::opaque", mutates_args=())
    def opaque(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @opaque.register_fake
    def _(x):
        return torch.empty_like(x)

    class Unexportable(torch.nn.Module):
        def forward(self, pixels):
            return opaque(pixels).flatten(1)

    def unexportable():
        return Unexportable()
    """
)


def rayfront(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rayfront", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def exported(result: subprocess.CompletedProcess[str]) -> Path:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def snapshot(root: Path) -> dict[str, str]:
    """Every path under the repository and beside it (staging folders) -> content hash."""
    return {
        str(p.relative_to(root.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.parent.rglob("*"))
    }


def parse_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict[str, Path]:
    """One repository: digits exported twice (versions 1, 2), multi with TorchScript."""
    root = tmp_path_factory.mktemp("export_e2e") / "repo"
    first = exported(rayfront("export", *DIGITS, "--repository", str(root), "--no-progress"))
    second = exported(rayfront("export", *DIGITS, "--repository", str(root)))
    multi = rayfront("export", *MULTI, "--repository", str(root), "--no-progress")
    lines = multi.stdout.strip().splitlines()
    return {
        "root": root,
        "digits_v1": first,
        "digits_v2": second,
        "multi": exported(multi),
        "multi_torchscript": Path(lines[0]),
    }


@pytest.fixture(scope="module")
def minilm_version(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export_e2e_minilm") / "repo"
    return exported(rayfront("export", *MINILM, "--repository", str(root), "--no-progress"))


def test_export_cli_prints_new_version_dirs_when_exported_twice(repo):
    root = repo["root"]
    assert repo["digits_v1"] == root / "digits" / "1"
    assert repo["digits_v2"] == root / "digits" / "2"
    assert sorted(p.name for p in (root / "digits").iterdir()) == ["1", "2", "config.pbtxt"]
    assert sorted(p.name for p in repo["digits_v2"].iterdir()) == ["model.onnx", "rayfront.json"]


def test_export_cli_writes_triton_model_config_when_model_exported(repo):
    cfg = parse_config(repo["root"] / "digits")
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("digits", "onnxruntime_onnx", 32)
    assert [
        (i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input
    ] == [("pixels", "TYPE_FP32", [1, 8, 8])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [
        ("logits", [10]),
        ("probabilities", [10]),
    ]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [16, 32]
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_export_cli_records_real_parity_and_accuracy_in_sidecar(repo):
    prov = json.loads((repo["digits_v1"] / "rayfront.json").read_text())
    assert prov["source"] == "rayfront.export.demos.digits:factory"
    assert prov["exporter"] in ("dynamo", "legacy")
    assert prov["extra"]["test_accuracy"] >= 0.95
    parity = prov["parity"]
    assert {r["batch_size"] for r in parity} == {1, 16, 32}
    assert {r["case"] for r in parity} == {"random", "zeros", "large"}
    for r in parity:
        assert r["format"] == "onnx" and r["passed"]
        assert (r["atol"], r["rtol"]) == (1e-4, 1e-3)
        assert 0 <= r["max_abs_err"] < 1e-2 and r["max_rel_err"] < 1e-3
    small = [r["max_abs_err"] for r in parity if r["case"] != "large"]
    assert max(small) < 1e-4  # ordinary inputs: within atol alone
    assert (
        prov["files"]["model.onnx"]
        == hashlib.sha256((repo["digits_v1"] / "model.onnx").read_bytes()).hexdigest()
    )


def test_export_cli_digits_classifies_held_out_images_when_run_in_onnxruntime(repo):
    from rayfront.export.demos.digits import load_data

    data = load_data()
    session = ort.InferenceSession(
        str(repo["digits_v2"] / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    correct = 0
    for start in range(0, len(data.y_test), 32):  # batches up to max_batch_size
        logits, probs = session.run(None, {"pixels": data.x_test[start : start + 32]})
        correct += int((logits.argmax(1) == data.y_test[start : start + 32]).sum())
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert correct / len(data.y_test) >= 0.95


def test_export_cli_writes_mixed_dtype_model_and_torchscript_sibling(repo):
    root = repo["root"]
    assert repo["multi"] == root / "multi" / "1"
    assert repo["multi_torchscript"] == root / "multi_torchscript" / "1"
    cfg = parse_config(root / "multi")
    assert [
        (t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in cfg.input
    ] == [
        ("features", "TYPE_FP32", [4]),
        ("ids", "TYPE_INT64", [-1]),
    ]
    assert [
        (t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in cfg.output
    ] == [
        ("scores", "TYPE_FP32", [3]),
        ("nonzero", "TYPE_INT64", [1]),
    ]
    ts = parse_config(root / "multi_torchscript")
    assert ts.platform == "pytorch_libtorch"
    assert ts.parameters["rayfront_input_order"].string_value == "features,ids"
    assert ts.parameters["rayfront.precision"].string_value == "fp16"
    prov = json.loads((repo["multi_torchscript"] / "rayfront.json").read_text())
    assert prov["parity"] and all(
        r["format"] == "torchscript" and r["precision"] == "fp16" and r["passed"]
        for r in prov["parity"]
    )
    onnx = json.loads((repo["multi"] / "rayfront.json").read_text())
    assert all(r["precision"] == "fp32" for r in onnx["parity"])


def test_repo_validate_accepts_exported_repository(repo):
    result = rayfront("repo", "validate", "--repository", str(repo["root"]))
    assert result.returncode == 0, result.stdout + result.stderr
    for model in ("digits", "multi", "multi_torchscript"):
        assert model in result.stdout


@pytest.mark.slow
def test_export_cli_minilm_embeds_like_sentence_transformers(minilm_version):
    from sentence_transformers import SentenceTransformer

    from rayfront.export.demos.minilm import model_path, tokenize

    cfg = parse_config(minilm_version.parent)
    assert [list(t.dims) for t in cfg.input] == [[-1], [-1]]
    prov = json.loads((minilm_version / "rayfront.json").read_text())
    assert {r["case"] for r in prov["parity"]} >= {"random/dyn-small", "random/dyn-large"}
    assert all(r["passed"] and r["max_abs_err"] < 1e-4 for r in prov["parity"])

    texts = ["A man is eating food.", "A man eats a meal.", "The stock market fell sharply."]
    session = ort.InferenceSession(
        str(minilm_version / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (emb,) = session.run(None, tokenize(texts))
    reference = SentenceTransformer(str(model_path()), device="cpu").encode(texts)
    np.testing.assert_allclose(emb, reference, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3  # paraphrases closer than unrelated text


# --- bad inputs: one line, exit code 1, no traceback, repository untouched --------------------


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad_models") / "bad_models.py"
    path.write_text(BAD_MODELS)
    return path


PIXELS = ["--input", "pixels:FP32:1,8,8", "--max-batch-size", "4"]
BAD_CASES = {
    "unknown_factory": (["rayfront.export.demos.digits:nope", *PIXELS], "has no attribute 'nope'"),
    "unknown_module": (["rayfront_missing_pkg.models:factory", *PIXELS], "cannot import module"),
    "factory_raises": (
        ["{bad}:raising", *PIXELS],
        "factory 'raising' raised RuntimeError: checkpoint",
    ),
    "bad_input_spec": (
        ["{bad}:noisy", "--input", "pixels:FP32", "--max-batch-size", "4"],
        "expected 3 ':'-separated fields",
    ),
    "unsupported_dtype": (
        ["{bad}:noisy", "--input", "pixels:COMPLEX64:1,8,8", "--max-batch-size", "4"],
        "unsupported datatype 'COMPLEX64'",
    ),
    "non_exportable_op": (
        ["{bad}:unexportable", *PIXELS],
        "cannot export model 'digits' to ONNX: dynamo exporter: .*rfe2e",
    ),
    "tolerance_failure": (
        ["{bad}:noisy", *PIXELS, "--atol", "0", "--rtol", "0"],
        "onnx output 'output__0' differs from PyTorch .* atol 0 \\+ rtol 0",
    ),
    "diverging_graph": (["{bad}:diverging", *PIXELS], "differs from PyTorch"),
    "bad_option_value": (
        ["{bad}:noisy", *PIXELS, "--max-queue-delay-us", "-1"],
        "--max-queue-delay-us -1: Input should be greater than or equal to 0",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_export_cli_fails_in_one_line_and_leaves_repo_identical_when_input_is_bad(
    repo, bad_models, case
):
    args, pattern = BAD_CASES[case]
    args = [a.replace("{bad}", str(bad_models)) for a in args]
    before = snapshot(repo["root"])
    result = rayfront(
        "export", *args, "--name", "digits", "--repository", str(repo["root"]), "--no-progress"
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert re.search(pattern, last), last
    assert snapshot(repo["root"]) == before


def test_export_cli_fails_clearly_when_repository_is_a_file(tmp_path):
    target = tmp_path / "repo.txt"
    target.write_text("not a repository")
    result = rayfront("export", *MULTI, "--repository", str(target), "--no-progress")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: model repository {target} is a file, not a directory; point --repository at "
        "the folder that holds the model folders"
    ]
    assert target.read_text() == "not a repository"


def test_export_cli_fails_when_tensorrt_on_but_unavailable(tmp_path):
    from rayfront.export.tensorrt import tensorrt_status

    available, reason = tensorrt_status()
    if available:
        pytest.skip("TensorRT is available here; --tensorrt on succeeds")
    result = rayfront("export", *MULTI, "--tensorrt", "on", "--repository", str(tmp_path / "r"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --tensorrt on, but TensorRT cannot be used here: {reason}"
    )
    assert not (tmp_path / "r").exists()


def test_export_cli_prints_traceback_when_debug_and_factory_fails(bad_models, tmp_path):
    result = rayfront(
        "export",
        f"{bad_models}:raising",
        *PIXELS,
        "--name",
        "x",
        "--repository",
        str(tmp_path / "r"),
        "--debug",
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: model reference")
    assert not (tmp_path / "r").exists()


def test_export_cli_requires_input_option_when_missing(tmp_path):
    result = rayfront(
        "export", "rayfront.export.demos.multi:factory", "--name", "m", "--max-batch-size", "2"
    )
    assert result.returncode == 2
    assert "--input" in result.stderr and "Traceback" not in result.stderr


def test_export_cli_help_documents_spec_format():
    result = rayfront("export", "--help")
    assert result.returncode == 0
    for text in (
        "NAME:DTYPE:SHAPE",
        "--max-batch-size",
        "--tensorrt",
        "--trt-shape",
        "--torchscript",
    ):
        assert text in result.stdout
