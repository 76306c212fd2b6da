"""Builders for runtime tests: tiny ONNX graphs, TorchScript modules and their specs.

A plain module (not conftest) so tests import it by a name no other test folder uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rayfront.spec import InstanceGroup, ModelSpec, TensorSpec

IN_DIM, OUT_DIM = 4, 3


def linear_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((IN_DIM, OUT_DIM)).astype(np.float32),
        rng.standard_normal(OUT_DIM).astype(np.float32),
    )


def write_linear_onnx(path: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x FP32 [N, 4] -> y = x @ W + b [N, 3], z = relu(y) [N, 3]; dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = linear_weights(seed)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN_DIM])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT_DIM]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", OUT_DIM]),
        ],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return w, b


def write_string_onnx(path: Path) -> None:
    """s BYTES [N] -> out = Identity(s) [N]."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["out"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def linear_spec(
    name: str = "linear",
    *,
    outputs: tuple[str, ...] = ("y", "z"),
    kind: str = "KIND_CPU",
    in_dims: tuple[int, ...] = (IN_DIM,),
    parameters: dict[str, str] | None = None,
    platform: str = "onnxruntime_onnx",
    backend: str = "",
) -> ModelSpec:
    return ModelSpec(
        name=name,
        platform=platform,
        backend=backend,
        max_batch_size=8,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=in_dims),),
        outputs=tuple(TensorSpec(name=o, datatype="FP32", dims=(OUT_DIM,)) for o in outputs),
        instance_groups=(InstanceGroup(kind=kind),),  # type: ignore[arg-type]
        parameters=parameters or {},
    )


def linear_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    y = x.astype(np.float32) @ w + b
    return {"y": y, "z": np.maximum(y, 0)}
