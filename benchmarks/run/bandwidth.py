"""Ingress bandwidth: how many 3x224x224 FP32 images per second reach a nearly free model.

The model only averages each image's channels (``y = mean(x, axes=[2, 3])``: 3 floats
back), so what is measured is the host data path: parsing, copying, batching and
answering 602,112-byte requests. Measured in one run, on the same machine:

* ``memcpy``: one core copying an image into a reused buffer, the floor of any data path;
* ``model``: ONNX Runtime on a batch, the cost of the "free" model itself;
* ``bare``: a bare uvicorn KServe v2 server (:mod:`..targets.bare_asgi`), run with as many
  worker processes as rayfront has ingress processes, as one would scale it;
* ``rayfront``: ``rayfront serve`` with 1 and N gateway (ingress) processes, over binary
  HTTP, gRPC, and HTTP with the tensors in Triton system shared memory.

Every request is answered and checked by the client processes of :mod:`..load.fleet`;
rates are summed over them. Results: ``ingress.json``, ``ingress.csv``, ``ingress.png``
and ``ingress.md`` with ratios against the bare server (same process count) and memcpy.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rayfront.benchmarks.load.fleet import FleetLoad, run_fleet

logger = logging.getLogger(__name__)

MODEL = "ingress"
SHAPE = (3, 224, 224)
IMAGE_BYTES = int(np.prod(SHAPE)) * 4
MAX_BATCH = 32


@dataclass
class IngressOptions:
    """One ingress run's knobs."""

    out: Path
    ingress: tuple[int, ...] = (1, 2)
    protocols: tuple[str, ...] = ("http", "grpc", "shm")
    clients: int = 2
    conc: int = 8
    secs: float = 5.0
    warmup_s: float = 1.0
    startup_timeout_s: float = 180.0
    progress: Callable[[str], None] = field(default=lambda msg: None)


def build_repository(root: Path) -> Path:
    """The nearly free model, as ONNX in a one-model Triton repository; returns its file."""
    from onnx import TensorProto, helper

    from rayfront.benchmarks.run.bench_models import add_onnx_version
    from rayfront.spec import DynamicBatching, InstanceGroup, ModelSpec, TensorSpec

    graph = helper.make_graph(
        [
            helper.make_node(
                "ReduceMean",
                ["x", "axes"],
                ["y"],
                keepdims=0,
            )
        ],
        "ingress",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *SHAPE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", SHAPE[0]])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])],
    )
    spec = ModelSpec(
        name=MODEL,
        platform="onnxruntime_onnx",
        max_batch_size=MAX_BATCH,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=SHAPE),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(SHAPE[0],)),),
        dynamic_batching=DynamicBatching(
            preferred_batch_size=(8, 16, MAX_BATCH), max_queue_delay_microseconds=500
        ),
        instance_groups=(InstanceGroup(kind="KIND_CPU", count=1),),
    )
    return add_onnx_version(root, graph, spec, "rayfront.benchmarks.run.bandwidth:build_repository")


def measure_memcpy(secs: float) -> dict[str, Any]:
    """One core copying one image into a reused buffer: MB/s and images/s."""
    src = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    dst = np.empty_like(src)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < secs:
        for _ in range(64):
            np.copyto(dst, src)
        n += 64
    return {"img_s": n / elapsed}


def measure_model(model_path: Path, secs: float) -> dict[str, Any]:
    """ONNX Runtime on full batches, input already in memory: the model's own ceiling."""
    from rayfront.benchmarks.targets.session import make_session

    session = make_session(str(model_path), device="cpu", tensorrt=False)
    x = np.random.default_rng(0).random((MAX_BATCH, *SHAPE), dtype=np.float32)
    session.run(None, {"x": x})
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < secs:
        session.run(None, {"x": x})
        n += MAX_BATCH
    return {"img_s": n / elapsed, "batch": MAX_BATCH}


def _point(target: str, ingress: int, proto: str, measured: dict[str, Any]) -> dict[str, Any]:
    img_s = float(measured.get("req_s", measured.get("img_s", 0.0)))
    return {
        "target": target,
        "ingress": ingress,
        "proto": proto,
        "img_s": img_s,
        "mb_s": img_s * IMAGE_BYTES / 1e6,
        **{k: v for k, v in measured.items() if k not in ("req_s", "img_s", "proto")},
    }


class Results:
    """Points so far; rewritten after each one, so an interrupted run keeps them."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.doc: dict[str, Any] = {"meta": meta, "points": []}

    def add(self, point: dict[str, Any]) -> None:
        self.doc["points"].append(point)
        tmp = self.out / "ingress.json.tmp"
        tmp.write_text(json.dumps(self.doc, indent=1))
        os.replace(tmp, self.out / "ingress.json")


def run_ingress(opts: IngressOptions) -> dict[str, Any]:
    """Measure every point; write json, csv, png and md; return the results document."""
    from rayfront.benchmarks.targets.rayfront_server import RayfrontServer
    from rayfront.benchmarks.targets.target import BareServer, Server

    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    meta = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "image_bytes": IMAGE_BYTES,
        "shape": list(SHAPE),
        "clients": opts.clients,
        "conc_per_client": opts.conc,
        "secs": opts.secs,
    }
    results = Results(out, meta)
    model_path = build_repository(out / "repository")
    repo = out / "repository"

    opts.progress("memcpy")
    results.add(_point("memcpy", 0, "-", measure_memcpy(min(opts.secs, 2.0))))
    opts.progress("model")
    results.add(_point("model", 0, "-", measure_model(model_path, min(opts.secs, 2.0))))

    load = FleetLoad(
        model=MODEL, input="x", output="y", shape=(1, *SHAPE), output_elems=SHAPE[0],
        clients=opts.clients, conc=opts.conc, secs=opts.secs, warmup_s=opts.warmup_s,
        expect="mean23",
    )  # fmt: skip

    def serve(server: Server, target: str, ingress: int, protos: tuple[str, ...]) -> None:
        try:
            server.start(opts.startup_timeout_s)
            for proto in protos:
                opts.progress(f"{target} x{ingress} {proto}")
                port = getattr(server, "grpc_port", 0) if proto == "grpc" else server.http_port
                results.add(_point(target, ingress, proto, run_fleet(proto, port, load)))
        except Exception as exc:  # keep the other targets' points
            logger.error("%s x%d failed: %s", target, ingress, exc)
            results.doc.setdefault("failures", []).append(f"{target} x{ingress}: {exc}")
        finally:
            server.stop()

    for n in opts.ingress:
        serve(BareServer(logs, MODEL, model_path, "cpu", False, workers=n), "bare", n, ("http",))
        server = RayfrontServer(
            logs, MODEL, repo, f"ingress-x{n}", protocols=("http", "grpc"), gateway_replicas=n
        )
        serve(server, "rayfront", n, opts.protocols)

    write_outputs(results.doc, out)
    return results.doc


def ratios(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each rayfront point against the bare server with the same process count and memcpy."""
    points = doc["points"]
    memcpy = next((p["img_s"] for p in points if p["target"] == "memcpy"), None)
    bare = {p["ingress"]: p["img_s"] for p in points if p["target"] == "bare"}
    rows = []
    for p in points:
        if p["target"] not in ("rayfront", "bare"):
            continue
        base = bare.get(p["ingress"])
        rows.append(
            {
                **p,
                "x_bare": p["img_s"] / base if base else None,
                "x_memcpy": p["img_s"] / memcpy if memcpy else None,
            }
        )
    return rows


def summary_markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    points = doc["points"]
    lines = [
        "# Ingress bandwidth",
        "",
        f"{meta['shape']} FP32 images ({meta['image_bytes']:,} bytes) into a nearly free model "
        f"on {meta['cpus']} CPUs; {meta['clients']} client processes x "
        f"{meta['conc_per_client']} connections, {meta['secs']} s per point.",
        "",
    ]
    for target in ("memcpy", "model"):
        p = next((q for q in points if q["target"] == target), None)
        if p:
            lines.append(f"- {target}: {p['img_s']:,.0f} img/s ({p['mb_s']:,.0f} MB/s)")
    lines += [
        "",
        "| target | ingress | protocol | img/s | MB/s | x bare | x memcpy | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v: float | None, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    for r in ratios(doc):
        lines.append(
            f"| {r['target']} | {r['ingress']} | {r['proto']} | {r['img_s']:,.0f} | "
            f"{r['mb_s']:,.0f} | {fmt(r['x_bare'], '.2f')} | {fmt(r['x_memcpy'], '.3f')} | "
            f"{fmt(r.get('p50_ms'), '.1f')} | {fmt(r.get('p99_ms'), '.1f')} | "
            f"{r.get('errors', 0)} |"
        )
    for failure in doc.get("failures", []):
        lines.append(f"\nFailed: {failure}")
    return "\n".join(lines) + "\n"


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    """ingress.csv, ingress.png and ingress.md next to ingress.json."""
    rows = ratios(doc)
    fields = ["target", "ingress", "proto", "img_s", "mb_s", "x_bare", "x_memcpy", "p50_ms",
              "p99_ms", "errors"]  # fmt: skip
    with (out / "ingress.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        keyed = {(r["target"], r["ingress"], r["proto"]): r for r in rows}
        for p in doc["points"]:
            writer.writerow(keyed.get((p["target"], p["ingress"], p["proto"]), p))
    (out / "ingress.md").write_text(summary_markdown(doc))
    _plot(doc, out / "ingress.png")


def _plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ratios(doc)
    labels = [f"{r['target']} {r['proto']}\nx{r['ingress']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4.5))
    ax.bar(range(len(rows)), [r["mb_s"] for r in rows], color="tab:blue")
    ax.set_xticks(range(len(rows)), labels, fontsize="small")
    memcpy = next((p for p in doc["points"] if p["target"] == "memcpy"), None)
    if memcpy:
        ax.set_title(f"Ingress bandwidth (memcpy, one core: {memcpy['mb_s']:,.0f} MB/s)")
    ax.set_ylabel("MB/s of 224 px FP32 images")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
