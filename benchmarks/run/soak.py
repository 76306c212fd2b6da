"""``rayfront bench soak``: mixed valid and invalid traffic for N minutes, outside CI.

A real ``rayfront serve`` (HTTP + gRPC) serves a tiny model whose answer is checkable
(``y = 2x``). Client threads send a seeded mix: most requests valid (HTTP binary, HTTP
JSON, gRPC), the rest hostile (wrong dtype, wrong shape, unknown model, bad JSON, a
lying header length, a missing input). Every answer is classified:

* ``ok``: a valid request answered with its own right result;
* ``refused``: an invalid request answered with the 4xx / gRPC code it deserves;
* ``wrong``: a valid request answered with another result, or an invalid one accepted;
* ``failed``: a valid request refused, or any 5xx / INTERNAL / UNKNOWN;
* ``lost``: no answer within the client timeout, or the connection dropped.

Every 5 s the server's processes (the CLI and every Ray process under it) are sampled for
RSS and open file descriptors, so a leak shows as growth. Results: ``soak.json`` (totals,
growth and the time series), ``soak.csv`` (the series), ``soak.png`` and ``summary.md``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import http.client
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MODEL = "soak"
WIDTH = 16
SAMPLE_S = 5.0
OUTCOMES = ("ok", "refused", "wrong", "failed", "lost")


@dataclass
class SoakOptions:
    out: Path
    minutes: float = 10.0
    clients: int = 8
    invalid_share: float = 0.2
    seed: int = 0
    timeout_s: float = 30.0
    startup_timeout_s: float = 180.0
    progress: Callable[[str], None] = field(default=lambda _msg: None)


def build_repository(root: Path) -> Path:
    """A one-model repository: ``y = 2 * x`` over ``x[batch, 16]`` FP32, batched."""
    from onnx import TensorProto, helper

    from rayfront.benchmarks.run.bench_models import add_onnx_version
    from rayfront.spec import DynamicBatching, ModelSpec, TensorSpec

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    spec = ModelSpec(
        name=MODEL,
        platform="onnxruntime_onnx",
        max_batch_size=32,
        inputs=(TensorSpec(name="x", datatype="FP32", dims=(WIDTH,)),),
        outputs=(TensorSpec(name="y", datatype="FP32", dims=(WIDTH,)),),
        dynamic_batching=DynamicBatching(max_queue_delay_microseconds=500),
    )
    add_onnx_version(root, graph, spec, "rayfront.benchmarks.run.soak:build_repository")
    return root


# --- one request of each kind -------------------------------------------------------------


def _http(port: int, path: str, body: bytes, headers: dict[str, str], timeout: float):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def _binary_body(x: np.ndarray, datatype: str = "FP32", name: str = "x") -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(x.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + x.tobytes(), len(header)


def _decode_binary(headers: list[tuple[str, str]], body: bytes) -> np.ndarray:
    length = int(dict((k.lower(), v) for k, v in headers)["inference-header-content-length"])
    return np.frombuffer(body[length:], dtype=np.float32)


class Traffic:
    """One client thread's request mix against the server."""

    def __init__(self, http_port: int, grpc_port: int, seed: int, opts: SoakOptions) -> None:
        import tritonclient.grpc as grpcclient

        self.http_port = http_port
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.opts = opts
        self.grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        self.grpcclient = grpcclient

    def one(self) -> str:
        if self.rng.random() < self.opts.invalid_share:
            return self.invalid()
        return self.valid()

    def valid(self) -> str:
        rows = self.rng.choice((1, 1, 2, 4))
        x = self.np_rng.random((rows, WIDTH), dtype=np.float32)
        kind = self.rng.choice(("binary", "json", "grpc"))
        try:
            if kind == "grpc":
                inp = self.grpcclient.InferInput("x", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                got = self.grpc.infer(MODEL, [inp], client_timeout=self.opts.timeout_s)
                y = got.as_numpy("y")
            elif kind == "binary":
                body, hlen = _binary_body(x)
                status, headers, out = _http(
                    self.http_port,
                    f"/v2/models/{MODEL}/infer",
                    body,
                    {"Inference-Header-Content-Length": str(hlen)},
                    self.opts.timeout_s,
                )
                if status != 200:
                    return "failed"
                y = _decode_binary(headers, out)
            else:
                body = json.dumps(
                    {
                        "inputs": [
                            {
                                "name": "x",
                                "shape": list(x.shape),
                                "datatype": "FP32",
                                "data": x.ravel().tolist(),
                            }
                        ]
                    }
                ).encode()
                status, _, out = _http(
                    self.http_port,
                    f"/v2/models/{MODEL}/infer",
                    body,
                    {"Content-Type": "application/json"},
                    self.opts.timeout_s,
                )
                if status != 200:
                    return "failed"
                y = np.asarray(json.loads(out)["outputs"][0]["data"], dtype=np.float32)
        except self.grpcclient.InferenceServerException as exc:
            return "lost" if "Deadline" in str(exc.status()) else "failed"
        except (OSError, http.client.HTTPException):
            return "lost"
        ok = np.allclose(np.asarray(y).reshape(x.shape), 2 * x, rtol=1e-6)
        return "ok" if ok else "wrong"

    def invalid(self) -> str:
        x = self.np_rng.random((1, WIDTH), dtype=np.float32)
        case = self.rng.choice(("dtype", "shape", "model", "json", "hlen", "missing"))
        path = f"/v2/models/{MODEL}/infer"
        headers: dict[str, str] = {}
        if case == "dtype":
            body, hlen = _binary_body(x.astype(np.float64), "FP64")
            headers["Inference-Header-Content-Length"] = str(hlen)
        elif case == "shape":
            body, hlen = _binary_body(self.np_rng.random((1, WIDTH + 3), dtype=np.float32))
            headers["Inference-Header-Content-Length"] = str(hlen)
        elif case == "model":
            body, hlen = _binary_body(x)
            headers["Inference-Header-Content-Length"] = str(hlen)
            path = "/v2/models/no-such-model/infer"
        elif case == "json":
            body = b'{"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [1,'
        elif case == "hlen":
            body, _ = _binary_body(x)
            headers["Inference-Header-Content-Length"] = str(len(body) * 4)
        else:
            body = json.dumps({"inputs": []}).encode()
        try:
            status, _, _ = _http(self.http_port, path, body, headers, self.opts.timeout_s)
        except (OSError, http.client.HTTPException):
            return "lost"
        if status in (400, 404):
            return "refused"
        return "wrong" if status == 200 else "failed"


# --- resource sampling ----------------------------------------------------------------------


def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def sample_resources(pid: int) -> dict[str, float]:
    """RSS (MiB) and open file descriptors summed over ``pid`` and every descendant."""
    import psutil

    rss = fds = 0
    procs = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            rss += proc.memory_info().rss
            fds += proc.num_fds()
            procs += 1
    return {"rss_mib": rss / 2**20, "fds": fds, "processes": procs}


# --- the run --------------------------------------------------------------------------------


def run_soak(opts: SoakOptions) -> dict[str, Any]:
    from rayfront.benchmarks.targets.rayfront_server import RayfrontServer

    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    repo = build_repository(out / "repository")
    server = RayfrontServer(out / "logs", MODEL, repo, "soak")
    opts.progress("starting rayfront serve")
    server.start(opts.startup_timeout_s)
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    series: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        assert server.process is not None and server.process.proc is not None
        pid = server.process.proc.pid

        def client(n: int) -> None:
            traffic = Traffic(server.http_port, server.grpc_port, opts.seed * 1000 + n, opts)
            local: Counter[str] = Counter()
            while not stop.is_set():
                local[traffic.one()] += 1
                if sum(local.values()) >= 50:
                    with lock:
                        counts.update(local)
                    local.clear()
            with lock:
                counts.update(local)

        threads = [
            threading.Thread(target=client, args=(n,), daemon=True) for n in range(opts.clients)
        ]
        for t in threads:
            t.start()
        deadline = started + opts.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(min(SAMPLE_S, max(0.0, deadline - time.monotonic())))
            with lock:
                snap = dict(counts)
            point = {"t_s": round(time.monotonic() - started, 1), **sample_resources(pid)}
            point.update({k: snap.get(k, 0) for k in OUTCOMES})
            series.append(point)
            opts.progress(
                f"{point['t_s']:.0f}s: {sum(snap.values())} sent, rss {point['rss_mib']:.0f} MiB, "
                f"fds {point['fds']}"
            )
        stop.set()
        for t in threads:
            t.join(timeout=opts.timeout_s + 5)
    finally:
        stop.set()
        server.stop()
    doc = summarize(counts, series, opts)
    write_outputs(doc, out)
    return doc


def summarize(counts: Counter[str], series: list[dict[str, Any]], opts: SoakOptions) -> dict:
    # Growth from the first sample after a minute's warm-up (caches, pools, Ray's own
    # start-up) to the last: a leak grows with time, a warm-up does not.
    warm = next((p for p in series if p["t_s"] >= 60), series[0] if series else None)
    last = series[-1] if series else None
    growth = {}
    if warm and last:
        growth = {
            "from_s": warm["t_s"],
            "to_s": last["t_s"],
            "rss_mib": round(last["rss_mib"] - warm["rss_mib"], 1),
            "rss_pct": round(100 * (last["rss_mib"] / warm["rss_mib"] - 1), 1),
            "fds": last["fds"] - warm["fds"],
        }
    sent = sum(counts.values())
    return {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "minutes": opts.minutes,
        "clients": opts.clients,
        "invalid_share": opts.invalid_share,
        "sent": sent,
        "req_s": round(sent / (opts.minutes * 60), 1) if opts.minutes else None,
        **{k: counts.get(k, 0) for k in OUTCOMES},
        "growth": growth,
        "series": series,
    }


def summary_markdown(doc: dict[str, Any]) -> str:
    g = doc.get("growth") or {}
    lines = [
        f"# rayfront soak, {doc['minutes']:g} min, {doc['clients']} clients, "
        f"{doc['invalid_share'] * 100:.0f}% invalid",
        "",
        "| sent | req/s | ok | refused (invalid, 4xx) | wrong | failed | lost |",
        "|---|---|---|---|---|---|---|",
        f"| {doc['sent']:,} | {doc['req_s']} | {doc['ok']:,} | {doc['refused']:,} | "
        f"{doc['wrong']} | {doc['failed']} | {doc['lost']} |",
        "",
    ]
    if g:
        lines.append(
            f"Server processes from {g['from_s']:.0f} s to {g['to_s']:.0f} s: RSS "
            f"{g['rss_mib']:+.1f} MiB ({g['rss_pct']:+.1f}%), file descriptors {g['fds']:+d}."
        )
    return "\n".join(lines) + "\n"


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    (out / "soak.json").write_text(json.dumps(doc, indent=2))
    if doc["series"]:
        with (out / "soak.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(doc["series"][0]))
            writer.writeheader()
            writer.writerows(doc["series"])
    (out / "summary.md").write_text(summary_markdown(doc))
    with contextlib.suppress(ImportError):
        _plot(doc, out / "soak.png")


def _plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = doc["series"]
    if not series:
        return
    t = [p["t_s"] / 60 for p in series]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(t, [p["rss_mib"] for p in series])
    axes[0].set_ylabel("server RSS (MiB)")
    axes[1].plot(t, [p["fds"] for p in series])
    axes[1].set_ylabel("open fds")
    sent = [sum(p[k] for k in OUTCOMES) for p in series]
    rate = [0.0] + [
        (b - a) / max(1e-9, (tb - ta) * 60)
        for a, b, ta, tb in zip(sent, sent[1:], t, t[1:], strict=False)
    ]
    axes[2].plot(t, rate)
    axes[2].set_ylabel("requests/s")
    axes[2].set_xlabel("minutes")
    fig.suptitle(
        f"soak: {doc['sent']:,} sent, {doc['ok']:,} ok, {doc['refused']:,} refused, "
        f"{doc['wrong']} wrong, {doc['failed']} failed, {doc['lost']} lost"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
