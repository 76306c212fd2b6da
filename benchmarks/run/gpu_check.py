"""The GPU data-path check: raw torch vs rayfront's engine vs the whole stack, in one run.

Measures, on one GPU and in one run (images/s, single-image requests, 224 px FP32):

* ``raw``: the TorchScript model on the device, input already there, best batch;
* ``engine``: rayfront's engine in-process (pinned batch slots, copy streams, two
  batches in flight, dynamic batcher), closed loop of single-image ``submit`` calls;
* ``http`` / ``grpc`` / ``shm``: the Ray-free stack (:mod:`..targets.local_stack`): N ingress
  processes on one port and one replica, driven by client processes over KServe v2 binary
  HTTP, gRPC, and HTTP with the tensors in system shared memory.

It needs torch with CUDA and rayfront's own dependencies; no Ray, no TensorRT. Results go
to ``OUT/gpu_check.json`` (rewritten after each point, so a timeout keeps what was
measured) and ``OUT/gpu_check.md``::

    python -m rayfront.benchmarks.run.gpu_check --out /tmp/gpu --budget-s 300

``--device cpu --quick`` runs the same code on a CPU with tiny sizes (a dry run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from rayfront.benchmarks.load.fleet import FleetLoad, run_fleet


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Results:
    """Points measured so far, written after each one."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.doc: dict[str, Any] = {"meta": meta, "points": []}

    def add(self, **point: Any) -> None:
        self.doc["points"].append(point)
        self.write()

    def write(self) -> None:
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.doc, indent=1, default=str))
        os.replace(tmp, self.out / "gpu_check.json")


# --- the repository ------------------------------------------------------------------------


def build_repository(root: Path, names: list[str], device: str, image: int, max_batch: int) -> None:
    """TorchScript versions of the benchmark CNNs, fp32 and fp16 (``rayfront.precision``)."""
    import torch

    from rayfront.benchmarks.run import torch_models
    from rayfront.repository.sidecar import Provenance
    from rayfront.repository.writer import write_version
    from rayfront.spec import DynamicBatching, InstanceGroup, ModelSpec, TensorSpec

    kind = "KIND_GPU" if device == "cuda" else "KIND_CPU"
    for name in names:
        net = getattr(torch_models, name)().eval()
        example = torch.randn(2, 3, image, image)
        with torch.inference_mode():
            traced = torch.jit.trace(net, example)
            classes = int(net(example).shape[1])
        path = root.parent / f"{name}.pt"
        traced.save(str(path))
        for precision in ("fp32", "fp16"):
            spec = ModelSpec(
                name=f"{name}_{precision}",
                platform="pytorch_libtorch",
                max_batch_size=max_batch,
                inputs=(TensorSpec(name="x", datatype="FP32", dims=(3, image, image)),),
                outputs=(TensorSpec(name="logits", datatype="FP32", dims=(classes,)),),
                dynamic_batching=DynamicBatching(
                    preferred_batch_size=tuple(b for b in (64, 128, max_batch) if b <= max_batch),
                    max_queue_delay_microseconds=2000,
                ),
                instance_groups=(InstanceGroup(kind=kind, count=1),),
                parameters={
                    "rayfront.precision": precision if device == "cuda" else "fp32",
                    "rayfront.warmup": "on",
                    # Constant-folded, as a competent user serves a TorchScript CNN (and
                    # as the raw baseline below runs it).
                    "freeze": "true",
                },
            )
            prov = Provenance(
                source=f"rayfront.benchmarks.run.torch_models:{name}",
                created_at=__import__("datetime").datetime.now(__import__("datetime").UTC),
                exporter="torchscript",
            )
            write_version(root, spec, {"model.pt": path}, prov)


# --- raw torch -------------------------------------------------------------------------------


def measure_raw(
    pt: Path, device: str, precision: str, batches: list[int], image: int, secs: float
) -> dict[str, Any]:
    import torch

    torch.backends.cudnn.benchmark = True
    module = torch.jit.load(str(pt), map_location=device).eval()
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if precision == "fp16":
        module = module.half()
    module = torch.jit.freeze(module)
    best = (0.0, 0)
    per_batch = {}
    with torch.inference_mode():
        for b in batches:
            x = torch.randn(b, 3, image, image, device=device, dtype=dtype)
            for _ in range(3):
                module(x)
            _sync(device)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < secs:
                module(x)
                n += 1
            _sync(device)
            rate = n * b / (time.perf_counter() - t0)
            per_batch[b] = rate
            if rate > best[0]:
                best = (rate, b)
    return {"img_s": best[0], "batch": best[1], "per_batch": per_batch}


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# --- the engine in-process -------------------------------------------------------------------


def measure_engine(
    repo: Path, model: str, image: int, concurrency: int, secs: float
) -> dict[str, Any]:
    from rayfront.engine import EngineSettings, VersionEngine
    from rayfront.repository.layout import Repository

    r = Repository(repo)
    spec = r.spec(model)
    engine = VersionEngine.load(
        spec, r.version_dir(model, 1), "1", settings=EngineSettings(depth=2)
    )
    x = {"x": np.random.default_rng(0).random((1, 3, image, image), dtype=np.float32)}

    async def run() -> tuple[int, list[float], float]:
        await engine.warm_up()
        lat: list[float] = []
        done = 0
        warm_end = time.perf_counter() + min(2.0, secs / 2)
        end = warm_end + secs

        async def worker() -> None:
            nonlocal done
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                await engine.submit(x)
                t1 = time.perf_counter()
                if t1 >= warm_end:
                    done += 1
                    lat.append(t1 - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await engine.close()
        return done, lat, secs

    try:
        import uvloop

        done, lat, span = uvloop.run(run())
    except ImportError:
        done, lat, span = asyncio.run(run())
    lat.sort()
    return {
        "img_s": done / span,
        "p50_ms": lat[len(lat) // 2] * 1e3 if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3 if lat else None,
        "concurrency": concurrency,
    }


# --- the stack over HTTP, gRPC and shared memory -----------------------------------------------


def measure_stack(
    repo: Path, model: str, logs: Path, ingress: int, clients: int, conc: int, secs: float,
    image: int, classes: int, protos: list[str],
) -> list[dict[str, Any]]:  # fmt: skip
    from rayfront.benchmarks.targets.local_stack import LocalStackServer

    server = LocalStackServer(logs, model, repo, "gpu", ingress=ingress)
    load = FleetLoad(
        model=model, input="x", output="logits", shape=(1, 3, image, image),
        output_elems=classes, clients=clients, conc=conc, secs=secs, warmup_s=2.0,
    )  # fmt: skip
    points = []
    try:
        server.start(240)
        for proto in protos:
            port = server.grpc_port if proto == "grpc" else server.http_port
            point = run_fleet(proto, port, load)
            point["img_s"] = point.pop("req_s")
            point["ingress"] = ingress
            points.append(point)
            _say(f"stack {proto} x{ingress}: {point['img_s']:.0f} img/s, errors {point['errors']}")
    finally:
        server.stop()
    return points


# --- the run ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu_check"))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes for a CPU dry run.")
    parser.add_argument("--models", default="cnn,resnet50")
    parser.add_argument("--secs", type=float, default=4.0, help="Measured seconds per point.")
    parser.add_argument("--ingress", default="1,4", help="Ingress process counts for the stack.")
    parser.add_argument("--stack", action=argparse.BooleanOptionalAction, default=True)
    run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> None:
    import torch

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is false")
    image, max_batch = (32, 16) if args.quick else (224, 256)
    secs = 1.0 if args.quick else args.secs
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    meta = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "cpus": os.cpu_count(),
        "image": image,
        "max_batch": max_batch,
    }
    results = Results(out, meta)
    repo = out / "repo" / "models"
    repo.parent.mkdir(parents=True, exist_ok=True)
    _say(f"building the repository ({names}) on {meta['device']}")
    build_repository(repo, names, device, image, max_batch)
    batches = [4, 16] if args.quick else [64, 128, 256]
    concurrencies = [32] if args.quick else [1024]
    for name in names:
        for precision in ("fp32", "fp16") if device == "cuda" else ("fp32",):
            model = f"{name}_{precision}"
            raw = measure_raw(out / "repo" / f"{name}.pt", device, precision, batches, image, secs)
            results.add(kind="raw", model=name, precision=precision, **raw)
            _say(f"raw {model}: {raw['img_s']:.0f} img/s at batch {raw['batch']}")
            for conc in concurrencies:
                eng = measure_engine(repo, model, image, conc, secs)
                eng["ratio"] = eng["img_s"] / raw["img_s"] if raw["img_s"] else None
                results.add(kind="engine", model=name, precision=precision, **eng)
                _say(
                    f"engine {model} c{conc}: {eng['img_s']:.0f} img/s ({eng['ratio']:.2f}x raw), "
                    f"p50 {eng['p50_ms']:.1f} ms p99 {eng['p99_ms']:.1f} ms"
                )
    if args.stack:
        first = names[0]
        raw_fp32 = next(
            p["img_s"] for p in results.doc["points"] if p["kind"] == "raw" and p["model"] == first
        )
        cpus = os.cpu_count() or 2
        for ingress in [int(i) for i in args.ingress.split(",")]:
            clients = 1 if args.quick else max(2, min(8, (cpus - ingress - 2) // 2))
            conc = 4 if args.quick else 64
            try:
                points = measure_stack(
                    repo, f"{first}_fp32", out / "logs", ingress, clients, conc, secs, image,
                    1000, ["http", "grpc", "shm"],
                )  # fmt: skip
            except Exception as exc:  # keep the other points
                _say(f"stack with {ingress} ingress failed: {type(exc).__name__}: {exc}")
                results.doc.setdefault("failures", []).append(f"stack x{ingress}: {exc}")
                results.write()
                continue
            for point in points:
                point["ratio"] = point["img_s"] / raw_fp32 if raw_fp32 else None
                results.add(kind="stack", model=first, precision="fp32", **point)
    (out / "gpu_check.md").write_text(table(results.doc))
    print(table(results.doc), flush=True)


def table(doc: dict[str, Any]) -> str:
    lines = [
        f"GPU check on {doc['meta']['device']} ({doc['meta']['cpus']} CPUs, torch {doc['meta']['torch']})",
        "",
        "| what | model | precision | img/s | x raw | p50 ms | p99 ms | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    raws = {(p["model"], p["precision"]): p["img_s"] for p in doc["points"] if p["kind"] == "raw"}
    for p in doc["points"]:
        raw = raws.get((p["model"], p["precision"]))
        ratio = "" if p["kind"] == "raw" or not raw else f"{p['img_s'] / raw:.2f}"
        if p["kind"] == "raw":
            what, notes = "raw torch", f"batch {p['batch']}"
        elif p["kind"] == "engine":
            what, notes = "engine in-process", f"c{p['concurrency']}"
        else:
            what = f"stack {p['proto']}"
            notes = f"{p['ingress']} ingress, {p['clients']}x{p['conc_per_client']} conns, {p['errors']} errors"
        p50 = f"{p['p50_ms']:.1f}" if p.get("p50_ms") else ""
        p99 = f"{p['p99_ms']:.1f}" if p.get("p99_ms") else ""
        lines.append(
            f"| {what} | {p['model']} | {p['precision']} | {p['img_s']:.0f} | {ratio} | {p50} | {p99} | {notes} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
