"""Builders for repository tests: specs, provenance, tiny ONNX graphs, tree snapshots.

A plain module (not conftest) so tests can import it by a name no other test folder uses.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from rayfront.repository.sidecar import ParityRecord, Provenance
from rayfront.spec import DynamicBatching, ModelSpec, TensorSpec


def make_spec(name: str = "m", **overrides: object) -> ModelSpec:
    """A batching ONNX model: x FP32 [-1, 3] -> y FP32 [3]."""
    fields: dict[str, object] = dict(
        name=name,
        platform="onnxruntime_onnx",
        max_batch_size=8,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(3,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(3,)),),
        dynamic_batching=DynamicBatching(
            preferred_batch_size=(4, 8), max_queue_delay_microseconds=100
        ),
    )
    fields.update(overrides)
    return ModelSpec(**fields)  # type: ignore[arg-type]


def make_provenance(*, passed: bool = True, **overrides: object) -> Provenance:
    fields: dict[str, object] = dict(
        source="tests.models:tiny",
        created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        exporter="dynamo",
        opset=18,
        versions={"torch": "2.13.0", "onnx": "1.23.0"},
        parity=[
            ParityRecord(
                format="onnx",
                batch_size=4,
                case="random",
                max_abs_err=2e-7 if passed else 0.5,
                max_rel_err=1e-6 if passed else 0.9,
                atol=1e-5,
                rtol=1e-4,
                passed=passed,
            )
        ],
    )
    fields.update(overrides)
    return Provenance(**fields)  # type: ignore[arg-type]


def make_onnx(
    path: Path,
    *,
    inputs: list[tuple[str, int, list[int | str]]] | None = None,
    outputs: list[tuple[str, int, list[int | str]]] | None = None,
) -> Path:
    """A valid ONNX file whose outputs are Identity copies of the first input.

    Shapes use ints for fixed dims and strings for symbolic ones ('batch').
    """
    from onnx import TensorProto, helper, save

    inputs = inputs if inputs is not None else [("x", TensorProto.FLOAT, ["batch", 3])]
    outputs = outputs if outputs is not None else [("y", TensorProto.FLOAT, ["batch", 3])]
    graph = helper.make_graph(
        [helper.make_node("Identity", [inputs[0][0]], [o[0]]) for o in outputs],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    save(model, str(path))
    return path


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (and root itself) -> content hash / kind / mode."""
    if not root.exists():
        return {"<root>": "absent"}
    snap = {"<root>": f"dir {oct(root.stat().st_mode)}"}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for d in dirnames:
            p = base / d
            snap[str(p.relative_to(root))] = f"dir {oct(p.stat().st_mode)}"
        for f in filenames:
            p = base / f
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            snap[str(p.relative_to(root))] = f"file {oct(p.stat().st_mode)} {digest}"
    return snap


def staging_leftovers(root: Path) -> list[str]:
    return sorted(
        p.name for p in root.parent.iterdir() if p.name.startswith(f".{root.name}.staging-")
    )
