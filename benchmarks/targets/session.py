"""One way to open an ONNX Runtime session, shared by every baseline so they run the same thing.

The raw limit, the bare ASGI server and the plain Ray Serve deployment must all run the
same graph with the same session options as rayfront's ONNX runtime, otherwise the ratios
compare configurations instead of serving overhead. Spinning is off (rayfront's default,
measured faster on small CPU hosts where spinning threads steal cores from the server).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rayfront.errors import FailedPreconditionError

logger = logging.getLogger(__name__)

Device = Literal["cpu", "cuda"]

_CUDA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def providers_for(device: Device, available: list[str], tensorrt: bool = False) -> list[str]:
    """Execution providers in priority order for ``device``, or raise naming what is missing."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = list(_CUDA_PROVIDERS) if tensorrt else ["CUDAExecutionProvider"]
    chosen = [p for p in wanted if p in available]
    if "CUDAExecutionProvider" not in chosen:
        raise FailedPreconditionError(
            f"device 'cuda' needs onnxruntime's CUDAExecutionProvider, but this onnxruntime "
            f"offers {available}; install onnxruntime-gpu (the `gpu` extra) on the GPU host"
        )
    if tensorrt and "TensorrtExecutionProvider" not in chosen:
        logger.warning("TensorRT execution provider not available; running on CUDA EP only")
    return [*chosen, "CPUExecutionProvider"]


def make_session(
    model_path: Path | str,
    device: Device = "cpu",
    intra_op_threads: int = 0,
    tensorrt: bool = False,
) -> Any:
    """An ``onnxruntime.InferenceSession`` configured like rayfront's ONNX runtime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = providers_for(device, ort.get_available_providers(), tensorrt=tensorrt)
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    logger.info("opened %s on %s", model_path, session.get_providers())
    return session


def session_io(session: Any) -> tuple[list[str], list[str]]:
    """(input names, output names) of a session."""
    return [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]


def metadata(session: Any, model_name: str, version: str = "1") -> dict[str, Any]:
    """KServe v2 model metadata for a session (batch dim reported as -1)."""
    from rayfront.dtypes import from_ort

    def tensors(metas: list[Any]) -> list[dict[str, Any]]:
        return [
            {
                "name": m.name,
                "datatype": from_ort(m.type),
                "shape": [d if isinstance(d, int) and d > 0 else -1 for d in m.shape],
            }
            for m in metas
        ]

    return {
        "name": model_name,
        "versions": [version],
        "platform": "onnxruntime_onnx",
        "inputs": tensors(session.get_inputs()),
        "outputs": tensors(session.get_outputs()),
    }


def random_inputs(session: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every session input with the batch dim set to ``batch``.

    Dynamic non-batch dims are not supported: the benchmark models have fixed shapes.
    """
    from rayfront.dtypes import from_ort, to_numpy

    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for meta in session.get_inputs():
        dims = list(meta.shape)
        rest = dims[1:]
        if any(not isinstance(d, int) or d <= 0 for d in rest):
            raise FailedPreconditionError(
                f"input {meta.name!r} has dynamic non-batch dims {dims}; the benchmark needs "
                "fixed per-row shapes"
            )
        dtype = to_numpy(from_ort(meta.type))
        shape = (batch, *rest)
        if dtype.kind == "f":
            out[meta.name] = rng.standard_normal(shape).astype(dtype)
        else:
            out[meta.name] = rng.integers(0, 100, size=shape).astype(dtype)
    return out
