"""export_model end to end in-process: what it writes, and that failures write nothing."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from export_helpers import snapshot, write_user_models

from rayfront.errors import ExportError, ParityError, RepositoryError, SignatureMismatchError
from rayfront.export import pipeline
from rayfront.export.pipeline import export_model
from rayfront.export.request import ExportRequest
from rayfront.repository.layout import Repository

MULTI = {
    "model_ref": "rayfront.export.demos.multi:factory",
    "name": "multi",
    "inputs": ["features:FP32:4", "ids:INT64:-1"],
    "outputs": ["scores", "nonzero"],
    "max_batch_size": 8,
    "tensorrt": "off",
    "progress": False,
}


@pytest.fixture
def repo_root(tmp_path):
    # Inside its own folder so snapshot() (which walks the parent) sees only this test's files.
    (tmp_path / "area").mkdir()
    return tmp_path / "area" / "repo"


def _request(root, **kw):
    return ExportRequest(**{**MULTI, "repository": root, **kw})


def test_export_model_writes_onnx_version_with_config_and_parity_when_model_is_valid(
    repo_root, tmp_path
):
    extra = tmp_path / "notes.txt"
    extra.write_text("hello")
    result = export_model(_request(repo_root, extra_files={"notes.txt": extra}))

    repo = Repository(repo_root)
    assert result.version_dir == repo.version_dir("multi", 1)
    assert result.versions == {"multi": result.version_dir}
    spec = repo.spec("multi")
    assert spec.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, t.dims) for t in spec.inputs] == [
        ("features", "FP32", (4,)),
        ("ids", "INT64", (-1,)),
    ]
    assert [(t.name, t.datatype, t.dims) for t in spec.outputs] == [
        ("scores", "FP32", (3,)),
        ("nonzero", "INT64", (1,)),
    ]
    assert spec.dynamic_batching.preferred_batch_size == (4, 8)
    assert spec.dynamic_batching.max_queue_delay_microseconds == 500
    assert (result.version_dir / "notes.txt").read_text() == "hello"

    prov = repo.sidecar("multi", 1)
    assert prov.exporter == "dynamo" and prov.opset == 18
    assert prov.source == MULTI["model_ref"]
    assert set(prov.files) == {"model.onnx", "notes.txt"}
    assert {r.batch_size for r in prov.parity} == {1, 4, 8}
    assert all(r.format == "onnx" and r.passed and r.max_abs_err < 1e-3 for r in prov.parity)
    assert prov.versions["torch"] and prov.versions["onnxruntime"]

    session = ort.InferenceSession(
        str(result.version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    scores, nonzero = session.run(
        None, {"features": np.ones((2, 4), np.float32), "ids": np.array([[0, 3, 5], [0, 0, 1]])}
    )
    assert scores.shape == (2, 3) and nonzero.tolist() == [[2], [1]]


def test_export_model_numbers_versions_when_exported_twice(repo_root):
    first = export_model(_request(repo_root))
    second = export_model(_request(repo_root))
    assert (first.version_dir.name, second.version_dir.name) == ("1", "2")
    assert Repository(repo_root).versions("multi") == [1, 2]


def test_export_model_writes_torchscript_sibling_with_order_parameters_when_asked(repo_root):
    result = export_model(_request(repo_root, torchscript=True))
    repo = Repository(repo_root)
    spec = repo.spec("multi_torchscript")
    assert spec.platform == "pytorch_libtorch"
    assert spec.parameters == {
        "rayfront_input_order": "features,ids",
        "rayfront_output_order": "scores,nonzero",
    }
    assert [t.name for t in spec.outputs] == ["scores", "nonzero"]
    prov = repo.sidecar("multi_torchscript", 1)
    assert prov.exporter == "torchscript"
    assert prov.parity and all(r.format == "torchscript" and r.passed for r in prov.parity)
    assert set(result.versions) == {"multi", "multi_torchscript"}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_export_model_checks_torchscript_parity_in_reduced_precision_when_asked(
    repo_root, precision
):
    export_model(_request(repo_root, torchscript=True, precision=precision))
    repo = Repository(repo_root)
    spec = repo.spec("multi_torchscript")
    assert spec.parameters["rayfront.precision"] == precision
    prov = repo.sidecar("multi_torchscript", 1)
    assert precision in prov.exporter_note
    records = prov.parity
    assert records and all(r.precision == precision and r.passed for r in records)
    # Measured in reduced precision: a real error above FP32's, held to the looser rtol.
    assert max(r.max_abs_err for r in records) > 1e-6
    assert {r.rtol for r in records} == {0.01 if precision == "fp16" else 0.04}
    # The ONNX model stays FP32 with its own tolerance.
    onnx = repo.sidecar("multi", 1).parity
    assert all(r.precision == "fp32" and r.atol == 1e-4 for r in onnx)


def test_export_model_writes_nothing_when_reduced_precision_parity_fails(repo_root):
    before = snapshot(repo_root.parent)
    with pytest.raises(ParityError, match="torchscript fp16 output"):
        export_model(
            _request(
                repo_root,
                torchscript=True,
                precision="fp16",
                fp16_atol=0.0,
                fp16_rtol=0.0,
                parity_batch_sizes=[8],
            )
        )
    assert snapshot(repo_root.parent) == before


def test_export_model_marks_output_dims_dynamic_when_they_follow_input(repo_root, tmp_path):
    models = write_user_models(tmp_path)
    export_model(
        ExportRequest(
            model_ref=f"{models}:echo",
            name="echo",
            inputs=["ids:INT64:-1"],
            max_batch_size=4,
            repository=repo_root,
            tensorrt="off",
            progress=False,
        )
    )
    out = Repository(repo_root).spec("echo").outputs[0]
    assert (out.name, out.datatype, out.dims) == ("output__0", "INT64", (-1,))


def test_export_model_leaves_repository_untouched_when_parity_fails(repo_root, tmp_path):
    export_model(_request(repo_root))
    before = snapshot(repo_root)
    models = write_user_models(tmp_path)
    with pytest.raises(
        ParityError, match="model 'multi': onnx output 'output__0' differs from PyTorch"
    ):
        export_model(
            ExportRequest(
                model_ref=f"{models}:diverging",
                name="multi",
                inputs=["x:FP32:4"],
                max_batch_size=8,
                repository=repo_root,
                tensorrt="off",
                progress=False,
            )
        )
    assert snapshot(repo_root) == before


def test_export_model_refuses_before_writing_when_signature_differs(repo_root, tmp_path):
    export_model(_request(repo_root))
    before = snapshot(repo_root)
    models = write_user_models(tmp_path)
    with pytest.raises(
        SignatureMismatchError,
        match="input 'features' missing from the new version of model 'multi'",
    ):
        export_model(
            ExportRequest(
                model_ref=f"{models}:echo",
                name="multi",
                inputs=["ids:INT64:-1"],
                max_batch_size=8,
                repository=repo_root,
                tensorrt="off",
                progress=False,
                torchscript=True,
            )
        )
    assert snapshot(repo_root) == before


def test_export_model_fails_before_loading_when_tensorrt_on_but_unavailable(repo_root, monkeypatch):
    monkeypatch.setattr(pipeline, "tensorrt_status", lambda: (False, "no CUDA GPU"))
    monkeypatch.setattr(pipeline, "load_model", lambda ref: pytest.fail("model must not load"))
    with pytest.raises(
        ExportError, match="--tensorrt on, but TensorRT cannot be used here: no CUDA GPU"
    ):
        export_model(_request(repo_root, tensorrt="on"))
    assert not repo_root.exists()


def test_export_model_notes_skip_and_writes_onnx_when_tensorrt_auto_unavailable(
    repo_root, monkeypatch
):
    monkeypatch.setattr(pipeline, "tensorrt_status", lambda: (False, "tensorrt not installed"))
    result = export_model(_request(repo_root, tensorrt="auto"))
    assert result.tensorrt_note == "TensorRT skipped: tensorrt not installed"
    assert set(result.versions) == {"multi"}


def test_export_model_requires_trt_shape_when_tensorrt_available_and_dim_dynamic(
    repo_root, monkeypatch
):
    monkeypatch.setattr(pipeline, "tensorrt_status", lambda: (True, "tensorrt 10 on a GPU"))
    with pytest.raises(ExportError, match=r"input 'ids' dim 0 .* is dynamic"):
        export_model(_request(repo_root, tensorrt="auto"))


def test_export_model_raises_repository_error_when_repository_is_a_file(tmp_path):
    target = tmp_path / "repo"
    target.write_text("not a folder")
    with pytest.raises(RepositoryError, match="is a file, not a directory"):
        export_model(_request(target))
    assert target.read_text() == "not a folder"


def test_export_model_explains_forward_failure_when_inputs_do_not_fit(repo_root):
    with pytest.raises(
        ExportError, match=r"forward\(\) fails on example inputs \(features:FP32\[2, 4\]\)"
    ):
        export_model(_request(repo_root, inputs=["features:FP32:4"], outputs=[]))


def test_export_model_raises_when_output_dtype_contradicts_model(repo_root):
    with pytest.raises(ExportError, match="output 'nonzero' is INT64, but --output says FP32"):
        export_model(_request(repo_root, outputs=["scores", "nonzero:FP32:1"]))


def test_export_model_raises_when_output_count_differs(repo_root):
    with pytest.raises(ExportError, match="returns 2 outputs, but 1 --output names were given"):
        export_model(_request(repo_root, outputs=["scores"]))


def test_export_model_refuses_scalar_outputs_when_batching(repo_root, tmp_path):
    models = write_user_models(tmp_path)
    with pytest.raises(ExportError, match="output 'output__0' has shape \\[1\\]"):
        export_model(
            ExportRequest(
                model_ref=f"{models}:scalar_out",
                name="s",
                inputs=["x:FP32:4"],
                max_batch_size=4,
                repository=repo_root,
                tensorrt="off",
                progress=False,
                parity_batch_sizes=[1],
            )
        )


def test_export_model_exports_torchscript_file_via_legacy_exporter_when_ref_is_pt(
    repo_root, tmp_path
):
    import torch

    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()).save(
        str(path)
    )
    result = export_model(
        ExportRequest(
            model_ref=str(path),
            name="scripted",
            inputs=["x:FP32:4"],
            max_batch_size=4,
            repository=repo_root,
            tensorrt="off",
            progress=False,
        )
    )
    assert result.exporter == "legacy"
    assert "Exporting a ScriptModule is not supported" in result.exporter_note
    prov = Repository(repo_root).sidecar("scripted", 1)
    assert prov.exporter == "legacy" and prov.exporter_note == result.exporter_note
    assert all(r.passed for r in prov.parity)
