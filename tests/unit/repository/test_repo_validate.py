"""validate_repository / check_onnx_signature / check_plan_stamp find each problem kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from onnx import TensorProto
from repo_helpers import make_onnx, make_provenance, make_spec

from rayfront.errors import RepositoryError
from rayfront.repository import validate as validate_mod
from rayfront.repository.pbtxt import render_config
from rayfront.repository.sidecar import SIDECAR_NAME, TensorRTStamp, write_sidecar
from rayfront.repository.validate import (
    ModelReport,
    check_onnx_signature,
    check_plan_stamp,
    validate_repository,
)
from rayfront.repository.writer import write_version
from rayfront.spec import TensorSpec, VersionPolicy

FLOAT, HALF, INT64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64


def _report(reports: list[ModelReport], name: str) -> ModelReport:
    return next(r for r in reports if r.name == name)


def _errors(report: ModelReport) -> list[str]:
    return [p.message for p in report.errors]


# --- check_onnx_signature ------------------------------------------------------------------


def test_check_onnx_signature_is_empty_when_graph_matches_batching_config(
    onnx_file: Callable[..., Path],
) -> None:
    assert check_onnx_signature(make_spec(), onnx_file()) == []


def test_check_onnx_signature_is_empty_when_graph_matches_non_batching_config(
    onnx_file: Callable[..., Path],
) -> None:
    spec = make_spec(
        max_batch_size=0,
        dynamic_batching=None,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(-1, 3)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(-1, 3)),),
    )
    assert check_onnx_signature(spec, onnx_file()) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (
            {"inputs": [("x", HALF, ["batch", 3])], "outputs": [("y", HALF, ["batch", 3])]},
            [
                "input 'x' of model 'm': config dtype FP32, graph FP16",
                "output 'y' of model 'm': config dtype FP32, graph FP16",
            ],
        ),
        (
            {"inputs": [("x", FLOAT, [1, 3])], "outputs": [("y", FLOAT, ["batch", 3])]},
            [
                "input 'x' of model 'm': dim 0 is the batch dim (max_batch_size 8) but the graph fixes it at 1; export with a dynamic batch dim"
            ],
        ),
        (
            {"inputs": [("x", FLOAT, ["batch", "n"])], "outputs": [("y", FLOAT, ["batch", 3])]},
            ["input 'x' of model 'm': dim 1 is fixed 3 in the config, dynamic ('n') in the graph"],
        ),
        (
            {"inputs": [("x", FLOAT, ["batch", 4])], "outputs": [("y", FLOAT, ["batch", 3])]},
            ["input 'x' of model 'm': dim 1 is 3 in the config, 4 in the graph"],
        ),
        (
            {"inputs": [("x", FLOAT, [3])], "outputs": [("y", FLOAT, ["batch", 3])]},
            [
                "input 'x' of model 'm': config shape [-1, 3] (batch dim first, from max_batch_size > 0) "
                "has rank 2, graph shape [3] has rank 1"
            ],
        ),
        (
            {
                "inputs": [("x", FLOAT, ["batch", 3]), ("extra", INT64, ["batch"])],
                "outputs": [("y", FLOAT, ["batch", 3])],
            },
            ["graph input 'extra' of model 'm' is not declared in config.pbtxt"],
        ),
        (
            {"inputs": [("renamed", FLOAT, ["batch", 3])], "outputs": [("y", FLOAT, ["batch", 3])]},
            [
                "input 'x' of model 'm' is not in the ONNX graph (graph inputs: renamed)",
                "graph input 'renamed' of model 'm' is not declared in config.pbtxt",
            ],
        ),
        (
            {"inputs": [("x", FLOAT, ["batch", 3])], "outputs": [("z", FLOAT, ["batch", 3])]},
            ["output 'y' of model 'm' is not in the ONNX graph (graph outputs: z)"],
        ),
    ],
    ids=[
        "dtype",
        "fixed-batch",
        "config-fixed-graph-dynamic",
        "fixed-differs",
        "rank",
        "undeclared-input",
        "renamed-input",
        "missing-output",
    ],
)
def test_check_onnx_signature_reports_precisely_when_graph_disagrees(
    tmp_path: Path, graph: dict[str, list[tuple[str, int, list[int | str]]]], expected: list[str]
) -> None:
    path = make_onnx(tmp_path / "g.onnx", **graph)
    assert check_onnx_signature(make_spec(), path) == expected


def test_check_onnx_signature_reports_config_dynamic_dim_when_graph_fixes_it(
    tmp_path: Path,
) -> None:
    spec = make_spec(inputs=(TensorSpec(name="x", datatype="FP32", dims=(-1,)),))
    path = make_onnx(tmp_path / "g.onnx")
    assert check_onnx_signature(spec, path) == [
        "input 'x' of model 'm': dim 1 is dynamic (-1) in the config, fixed 3 in the graph"
    ]


def test_check_onnx_signature_accepts_output_subset_when_graph_has_more_outputs(
    tmp_path: Path,
) -> None:
    path = make_onnx(
        tmp_path / "g.onnx", outputs=[("y", FLOAT, ["b", 3]), ("aux", FLOAT, ["b", 3])]
    )
    assert check_onnx_signature(make_spec(), path) == []


def test_check_onnx_signature_reports_file_when_it_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\xff\xfe definitely not protobuf \x00\x01")
    (problem,) = check_onnx_signature(make_spec(), path)
    assert problem.startswith(f"{path}: not a valid ONNX file")


def test_check_onnx_signature_reports_missing_external_weights_when_file_is_absent(
    tmp_path: Path,
) -> None:
    import numpy as np
    from onnx import helper, numpy_helper, save

    weight = numpy_helper.from_array(np.ones((3,), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", 3])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "model.onnx"
    save(model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    assert check_onnx_signature(make_spec(), path) == []
    (tmp_path / "model.onnx.data").unlink()
    assert check_onnx_signature(make_spec(), path) == [
        f"{path}: external weights file 'model.onnx.data' is missing next to the graph"
    ]


# --- check_plan_stamp ----------------------------------------------------------------------

STAMP = TensorRTStamp(
    tensorrt_version="10.3.0.26", compute_capability="9.0", gpu_name="NVIDIA H100", fp16=True
)


def test_check_plan_stamp_is_none_when_trt_release_and_gpu_match() -> None:
    assert check_plan_stamp(STAMP, "10.3.0.30", "9.0") is None


def test_check_plan_stamp_reports_unstamped_plan_when_stamp_is_missing() -> None:
    assert check_plan_stamp(None, "10.3.0", "9.0").startswith("unstamped plan")


@pytest.mark.parametrize(
    ("trt", "cc", "expected"),
    [
        ("10.4.0.1", "9.0", "this machine has TensorRT 10.4.0.1;"),
        ("10.3.0.26", "8.6", "this machine has compute capability 8.6;"),
        ("8.6.1", "8.0", "this machine has TensorRT 8.6.1 and compute capability 8.0;"),
    ],
    ids=["trt", "cc", "both"],
)
def test_check_plan_stamp_names_build_and_machine_when_they_differ(
    trt: str, cc: str, expected: str
) -> None:
    message = check_plan_stamp(STAMP, trt, cc)
    assert message is not None
    assert message.startswith(
        "TensorRT plan was built with TensorRT 10.3.0.26 for compute capability 9.0 (NVIDIA H100)"
    )
    assert expected in message


def test_check_plan_stamp_compares_only_known_parts_when_machine_is_partly_unknown() -> None:
    assert check_plan_stamp(STAMP, None, "9.0") is None
    assert "compute capability 7.5" in (check_plan_stamp(STAMP, None, "7.5") or "")


# --- validate_repository -------------------------------------------------------------------


def _plan_model(root: Path, src: Path, stamp: TensorRTStamp | None) -> None:
    write_version(
        root,
        make_spec(name="plan", platform="tensorrt_plan"),
        {"model.plan": src},
        make_provenance(tensorrt=stamp),
    )


def test_validate_repository_passes_when_written_by_writer(
    repo_root: Path, onnx_file: Callable[..., Path]
) -> None:
    write_version(repo_root, make_spec(), {"model.onnx": onnx_file()}, make_provenance())
    (report,) = validate_repository(repo_root)
    assert report == ModelReport(
        name="m", ok=True, problems=[], versions=[1], platform="onnxruntime_onnx"
    )


def test_validate_repository_finds_each_problem_when_models_are_broken(
    repo_root: Path, onnx_file: Callable[..., Path]
) -> None:
    good = onnx_file()
    write_version(
        repo_root, make_spec(name="parity"), {"model.onnx": good}, make_provenance(passed=False)
    )
    write_version(repo_root, make_spec(name="missing"), {"model.onnx": good}, make_provenance())
    (repo_root / "missing" / "1" / "model.onnx").unlink()
    write_version(repo_root, make_spec(name="tampered"), {"model.onnx": good}, make_provenance())
    with (repo_root / "tampered" / "1" / "model.onnx").open("ab") as fh:
        fh.write(b"\x32\x01x")  # ModelProto.doc_string = "x": still valid ONNX, new bytes
    write_version(repo_root, make_spec(name="badsidecar"), {"model.onnx": good}, make_provenance())
    (repo_root / "badsidecar" / "1" / SIDECAR_NAME).write_text("{")
    write_version(
        repo_root,
        make_spec(name="wrongdtype"),
        {"model.onnx": onnx_file(inputs=[("x", INT64, ["b", 3])])},
        make_provenance(),
    )
    (repo_root / "empty").mkdir()
    (repo_root / "empty" / "config.pbtxt").write_text(render_config(make_spec(name="empty")))
    (repo_root / "broken").mkdir()
    (repo_root / "broken" / "config.pbtxt").write_text("name: 'broken' max_batch_size: x")
    (repo_root / "broken" / "1").mkdir()
    (repo_root / "pinned").mkdir()
    (repo_root / "pinned" / "config.pbtxt").write_text(
        render_config(
            make_spec(name="pinned", version_policy=VersionPolicy(kind="specific", versions=(1, 2)))
        )
    )
    (repo_root / "pinned" / "1").mkdir()
    (repo_root / "pinned" / "1" / "model.onnx").write_bytes(good.read_bytes())

    reports = validate_repository(repo_root)
    assert [r.name for r in reports] == [
        "badsidecar",
        "broken",
        "empty",
        "missing",
        "parity",
        "pinned",
        "tampered",
        "wrongdtype",
    ]
    assert not any(r.ok for r in reports)

    assert _errors(_report(reports, "parity")) == [
        "parity failed: onnx parity case 'random' at batch 4: max_abs_err 0.5 (atol 1e-05), "
        "max_rel_err 0.9 (rtol 0.0001)"
    ]
    missing = _errors(_report(reports, "missing"))
    assert "model.onnx: listed in rayfront.json but missing" in missing
    assert any(m.startswith("model file 'model.onnx' is missing from") for m in missing)
    assert _errors(_report(reports, "tampered")) == [
        "model.onnx: sha256 differs from rayfront.json (changed after export)"
    ]
    (bad,) = _errors(_report(reports, "badsidecar"))
    assert f"badsidecar/1/{SIDECAR_NAME}: invalid provenance sidecar" in bad
    assert _errors(_report(reports, "wrongdtype")) == [
        "input 'x' of model 'wrongdtype': config dtype FP32, graph INT64"
    ]
    (empty,) = _report(reports, "empty").problems
    assert (empty.version, empty.message) == (
        None,
        f"no version folders (e.g. {repo_root}/empty/1)",
    )
    broken = _report(reports, "broken")
    assert broken.platform == ""
    assert broken.versions == [1]
    (parse,) = _errors(broken)
    assert parse.startswith(f"{repo_root}/broken/config.pbtxt: cannot parse model config")
    pinned = _report(reports, "pinned")
    assert _errors(pinned) == ["version_policy names version 2, which has no folder"]
    assert [p.message for p in pinned.problems if p.severity == "note"] == [
        "no rayfront.json sidecar: provenance and parity unknown"
    ]


def test_validate_repository_notes_unverifiable_plan_when_machine_has_no_tensorrt(
    repo_root: Path, onnx_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validate_mod, "local_tensorrt_version", lambda: None)
    monkeypatch.setattr(validate_mod, "local_compute_capability", lambda: None)
    _plan_model(repo_root, onnx_file(), STAMP)
    (report,) = validate_repository(repo_root)
    assert report.ok
    (note,) = report.problems
    assert note.severity == "note"
    assert note.message == (
        "plan cannot be verified here (no TensorRT and GPU): stamped for TensorRT 10.3.0.26 "
        "on compute capability 9.0"
    )


def test_validate_repository_fails_plan_when_stamp_is_missing_or_mismatched(
    repo_root: Path, onnx_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validate_mod, "local_tensorrt_version", lambda: "10.3.0.26")
    monkeypatch.setattr(validate_mod, "local_compute_capability", lambda: "8.9")
    _plan_model(repo_root, onnx_file(), STAMP)
    _plan_model(repo_root, onnx_file(), None)
    (report,) = validate_repository(repo_root)
    assert not report.ok
    assert [(p.version, p.message.split(":")[0].split(",")[0]) for p in report.problems] == [
        (
            1,
            "TensorRT plan was built with TensorRT 10.3.0.26 for compute capability 9.0 (NVIDIA H100)",
        ),
        (2, "unstamped plan"),
    ]


def test_validate_repository_raises_when_repository_is_missing(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="does not exist"):
        validate_repository(tmp_path / "absent")


def test_validate_repository_does_not_probe_gpu_when_no_plan_exists(
    repo_root: Path, onnx_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden() -> None:
        raise AssertionError("probed TensorRT/GPU without a plan in the repository")

    monkeypatch.setattr(validate_mod, "local_tensorrt_version", forbidden)
    monkeypatch.setattr(validate_mod, "local_compute_capability", forbidden)
    write_version(repo_root, make_spec(), {"model.onnx": onnx_file()}, make_provenance())
    write_sidecar(repo_root / "m" / "1", make_provenance())  # files={} -> no hash check
    assert validate_repository(repo_root)[0].ok


# --- the local probes, on real hardware ------------------------------------------------------


@pytest.mark.gpu
def test_local_compute_capability_matches_torch_when_cuda_gpu_is_present() -> None:
    import torch

    major, minor = torch.cuda.get_device_capability()
    validate_mod.local_compute_capability.cache_clear()
    assert validate_mod.local_compute_capability() == f"{major}.{minor}"


@pytest.mark.tensorrt
def test_local_tensorrt_version_matches_package_when_tensorrt_is_installed() -> None:
    import tensorrt

    validate_mod.local_tensorrt_version.cache_clear()
    assert validate_mod.local_tensorrt_version() == tensorrt.__version__
