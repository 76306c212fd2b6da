"""A fleet of client processes driving one model with one large tensor per request.

One client process is one closed loop over ``conc`` connections (binary HTTP, gRPC, or HTTP
whose tensors live in Triton system shared memory); it prints one JSON line. A fleet runs
several of them at once, because one Python client saturates its own core long before a
multi-process server does, and sums what they measured.

The shared-memory client registers its own regions through the HTTP extension, exactly as
``tritonclient.utils.shared_memory`` users do, fills the input once and reuses it: the
server still reads every request's input from the region and writes every output into it.
A real client would also write each new input into the region; that copy is the client's
and is the ``memcpy`` row of the ingress benchmark.

Run by :func:`run_fleet`; by hand::

    python -m rayfront.benchmarks.load.fleet --proto http --port 8000 --model m --input x \\
        --output y --shape 3,224,224 --output-elems 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np

HOST = "127.0.0.1"


@dataclass(frozen=True)
class FleetLoad:
    """What every request of a fleet carries and how hard the fleet pushes."""

    model: str
    input: str
    output: str
    shape: tuple[int, ...]  # one request's input, batch dim included
    output_elems: int  # FP32 elements of one request's output
    clients: int
    conc: int  # connections per client
    secs: float
    warmup_s: float = 1.0
    timeout_s: float = 30.0
    expect: str = "none"  # see --expect


def _shm_requests(args: argparse.Namespace, x: np.ndarray) -> tuple[list[bytes], list[Any]]:
    import tritonclient.utils.shared_memory as shm

    from rayfront.benchmarks.load import wire

    tag = f"rfbench{os.getpid()}"
    out_bytes = 4 * args.output_elems
    regions = [
        shm.create_shared_memory_region(f"{tag}in", f"/{tag}in", x.nbytes),
        shm.create_shared_memory_region(f"{tag}out", f"/{tag}out", out_bytes * args.conc),
    ]
    shm.set_shared_memory_region(regions[0], [x])
    for name, size in ((f"{tag}in", x.nbytes), (f"{tag}out", out_bytes * args.conc)):
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://{HOST}:{args.port}/v2/systemsharedmemory/region/{name}/register",
                data=json.dumps({"key": f"/{name}", "offset": 0, "byte_size": size}).encode(),
                method="POST",
            ),
            timeout=10,
        ).read()
    requests = [
        wire.build_http_request(
            HOST,
            args.port,
            wire.infer_path(args.model),
            wire.encode_shm_infer_body(
                [(args.input, "FP32", list(x.shape), f"{tag}in", x.nbytes, 0)],
                [(args.output, f"{tag}out", out_bytes, i * out_bytes)],
            ),
            None,
        )
        for i in range(args.conc)
    ]
    return requests, regions


def _expected(kind: str, x: np.ndarray) -> np.ndarray | None:
    """The answer a known model must give for ``x`` (``mean23``: the ingress model)."""
    if kind == "mean23":
        return x.mean(axis=(2, 3), dtype=np.float64).astype(np.float32)
    return None


def _value_check(output: str, expected: np.ndarray | None) -> Any:
    from rayfront.benchmarks.load import wire
    from rayfront.benchmarks.load.closed_loop import CallError

    if expected is None:
        return None

    def check(body: bytes, header_length: int | None) -> None:
        got = wire.decode_body(body, header_length, "response").tensors.get(output)
        if got is None or got.shape != expected.shape:
            raise CallError(f"output {output!r} missing or misshapen")
        if not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise CallError(f"output {output!r} holds another answer")

    return check


def _check_shm_outputs(
    region: Any, args: argparse.Namespace, expected: np.ndarray, res: Any
) -> None:
    import tritonclient.utils.shared_memory as shm

    for i in range(args.conc):
        got = shm.get_contents_as_numpy(
            region, np.float32, list(expected.shape), offset=i * 4 * args.output_elems
        )
        if not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
            res.errors += 1
            res.error_messages[f"shared-memory output slot {i} holds another answer"] += 1


def client_main(args: argparse.Namespace) -> dict[str, Any]:
    """One client process's closed loop; returns (and prints) its summary."""
    from rayfront.benchmarks.load import closed_loop as cl
    from rayfront.benchmarks.load import wire

    shape = tuple(int(d) for d in args.shape.split(","))
    x = np.random.default_rng(os.getpid()).random(shape, dtype=np.float32)
    expected = _expected(args.expect, x)
    regions: list[Any] = []
    if args.proto == "http":
        body, hl = wire.encode_infer_body({args.input: x}, [args.output])
        req = wire.build_http_request(HOST, args.port, wire.infer_path(args.model), body, hl)
        coro = cl.http_point(
            HOST, args.port, req, args.conc, args.dur, args.warmup, args.timeout,
            check=_value_check(args.output, expected),
        )  # fmt: skip
    elif args.proto == "grpc":
        payload = wire.grpc_infer_request(args.model, {args.input: x})
        coro = cl.grpc_point(
            HOST, args.port, payload, args.output, shape[0], args.conc, args.dur, args.warmup,
            args.timeout, channels=min(args.conc, 8),
        )  # fmt: skip
    else:
        requests, regions = _shm_requests(args, x)
        coro = cl.http_requests_point(
            HOST, args.port, requests, args.dur, args.warmup, args.timeout
        )
    try:
        res = cl.run_async(coro)
        if regions and expected is not None:
            # Every connection's output slot must hold this client's answer, not another's.
            _check_shm_outputs(regions[1], args, expected, res)
    finally:
        if regions:
            import tritonclient.utils.shared_memory as shm

            for handle in regions:
                shm.destroy_shared_memory_region(handle)
    lat = sorted(res.latencies_s)
    summary = {
        "n": len(lat),
        "req_s": len(lat) / res.duration_s if res.duration_s else 0.0,
        "errors": res.errors,
        "error_samples": res.error_samples(),
        "p50_ms": lat[len(lat) // 2] * 1e3 if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3 if lat else None,
    }
    print(json.dumps(summary), flush=True)
    return summary


def run_fleet(proto: str, port: int, load: FleetLoad) -> dict[str, Any]:
    """Run ``load.clients`` client processes at once; their summed rate and worst tails."""
    cmd = [
        sys.executable, "-m", "rayfront.benchmarks.load.fleet",
        "--proto", proto, "--port", str(port), "--model", load.model,
        "--input", load.input, "--output", load.output,
        "--shape", ",".join(map(str, load.shape)), "--output-elems", str(load.output_elems),
        "--conc", str(load.conc), "--dur", str(load.secs), "--warmup", str(load.warmup_s),
        "--timeout", str(load.timeout_s), "--expect", load.expect,
    ]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(load.clients)
    ]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=load.secs + load.warmup_s + load.timeout_s + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        try:
            outs.append(json.loads(out.strip().splitlines()[-1]))
        except (IndexError, json.JSONDecodeError):
            outs.append({"req_s": 0.0, "errors": 1, "error_samples": [err[-400:]]})
    return {
        "proto": proto,
        "clients": load.clients,
        "conc_per_client": load.conc,
        "requests": sum(o.get("n", 0) for o in outs),
        "req_s": sum(o["req_s"] for o in outs),
        "p50_ms": max((o.get("p50_ms") or 0) for o in outs),
        "p99_ms": max((o.get("p99_ms") or 0) for o in outs),
        "errors": sum(o.get("errors", 0) for o in outs),
        "error_samples": [s for o in outs for s in o.get("error_samples", [])][:3],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", choices=["http", "grpc", "shm"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", default="x")
    parser.add_argument("--output", default="y")
    parser.add_argument(
        "--shape", required=True, help="One request's input shape, e.g. 1,3,224,224."
    )
    parser.add_argument("--output-elems", type=int, required=True)
    parser.add_argument("--conc", type=int, default=16)
    parser.add_argument("--dur", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument(
        "--expect", choices=["none", "mean23"], default="none", help="Check every answer's values."
    )
    client_main(parser.parse_args(argv))


if __name__ == "__main__":
    main()
