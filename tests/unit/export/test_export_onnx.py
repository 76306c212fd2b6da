"""PyTorch -> ONNX: dynamic dims, names, exporter fallback and failures."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from rayfront.errors import ExportError
from rayfront.export.onnx_export import default_output_names, export_onnx, summarize_exception
from rayfront.export.specs import parse_input_spec


class _EmbedPool(torch.nn.Module):
    """Its inner FX node is called `embedding`, like the output we ask for."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids).mean(dim=1)


class _DataDependent(torch.nn.Module):
    """A Python branch on a tensor value: torch.export refuses it, the tracer records one side."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1e30:
            return x * 2
        return x


@torch.library.custom_op("rftest_onnx::opaque", mutates_args=())
def _opaque(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_opaque.register_fake
def _(x):
    return torch.empty_like(x)


class _Unexportable(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _opaque(x) + 1


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_export_onnx_names_outputs_despite_inner_name_clash_when_dynamo_used(tmp_path):
    model = _EmbedPool().eval()
    result = export_onnx(
        model,
        model_name="pool",
        inputs=[parse_input_spec("ids:INT64:-1")],
        output_names=["embedding"],
        max_batch_size=8,
        out_dir=tmp_path / "o",
    )
    assert result.exporter == "dynamo" and result.note == ""
    graph = onnx.load(str(result.path)).graph
    assert [i.name for i in graph.input] == ["ids"]
    assert [o.name for o in graph.output] == ["embedding"]
    assert _dims(graph.input[0])[0] == "batch"
    ids = np.array([[1, 2, 3, 4, 5]], dtype=np.int64)  # batch 1, length 5: both dynamic
    (got,) = _run(result.path, {"ids": ids})
    np.testing.assert_allclose(got, model(torch.from_numpy(ids)).detach().numpy(), atol=1e-6)
    assert result.files == (result.path,)  # small model: one file, no external data


def test_export_onnx_uses_legacy_exporter_with_dynamic_axes_when_forced(tmp_path):
    model = torch.nn.Linear(4, 2).eval()
    result = export_onnx(
        model,
        model_name="lin",
        inputs=[parse_input_spec("x:FP32:4")],
        output_names=["y"],
        max_batch_size=8,
        out_dir=tmp_path / "o",
        force_legacy=True,
        opset=17,
    )
    assert (result.exporter, result.opset) == ("legacy", 17)
    graph = onnx.load(str(result.path)).graph
    assert _dims(graph.input[0]) == ["batch", 4]
    assert _dims(graph.output[0])[0] == "batch"
    (got,) = _run(result.path, {"x": np.ones((5, 4), np.float32)})
    assert got.shape == (5, 2)


def test_export_onnx_falls_back_to_legacy_and_logs_reason_when_dynamo_fails(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="rayfront.export.onnx_export"):
        result = export_onnx(
            _DataDependent().eval(),
            model_name="dd",
            inputs=[parse_input_spec("x:FP32:3")],
            output_names=["y"],
            max_batch_size=4,
            out_dir=tmp_path / "o",
        )
    assert result.exporter == "legacy"
    assert result.note.startswith("dynamo exporter failed (")
    assert "trying the legacy exporter" in caplog.text
    (got,) = _run(result.path, {"x": np.ones((3, 3), np.float32)})
    np.testing.assert_allclose(got, 2 * np.ones((3, 3)))


def test_export_onnx_raises_one_line_error_naming_the_op_when_nothing_can_export(tmp_path):
    with pytest.raises(ExportError) as info:
        export_onnx(
            _Unexportable().eval(),
            model_name="opaque",
            inputs=[parse_input_spec("x:FP32:3")],
            output_names=["y"],
            max_batch_size=4,
            out_dir=tmp_path / "o",
        )
    message = info.value.message
    assert message.startswith("cannot export model 'opaque' to ONNX: dynamo exporter: ")
    assert "rftest_onnx.opaque" in message and "legacy exporter: " in message
    assert "\n" not in message


def test_export_onnx_raises_when_output_names_do_not_match_graph(tmp_path):
    with pytest.raises(ExportError, match="the exported graph has 1 outputs but 2 output names"):
        export_onnx(
            torch.nn.Linear(4, 2).eval(),
            model_name="lin",
            inputs=[parse_input_spec("x:FP32:4")],
            output_names=["a", "b"],
            max_batch_size=2,
            out_dir=tmp_path / "o",
        )


def test_export_onnx_keeps_full_static_shape_when_model_does_not_batch(tmp_path):
    result = export_onnx(
        torch.nn.Linear(4, 2).eval(),
        model_name="lin",
        inputs=[parse_input_spec("x:FP32:3,4")],
        output_names=["y"],
        max_batch_size=0,
        out_dir=tmp_path / "o",
    )
    assert _dims(onnx.load(str(result.path)).graph.input[0]) == [3, 4]


def test_summarize_exception_extracts_root_cause_when_dynamo_message_is_long():
    err = RuntimeError(
        "Failed to convert the exported program. \x1b[96mThis is step 3/3\x1b[0m\n- hints\n\n"
        "## Exception summary\n\n<class 'torch.onnx._internal.exporter._errors.DispatchError'>: "
        "No ONNX function found for <OpOverload(op='x.y', overload='default')>.\n⬆️\nmore"
    )
    assert summarize_exception(err) == (
        "DispatchError: No ONNX function found for <OpOverload(op='x.y', overload='default')>."
    )


def test_summarize_exception_uses_first_line_and_truncates_when_plain():
    assert summarize_exception(ValueError("first\nsecond")) == "ValueError: first"
    assert len(summarize_exception(ValueError("x" * 1000))) == 300


def test_default_output_names_follow_triton_convention():
    assert default_output_names(2) == ["output__0", "output__1"]
