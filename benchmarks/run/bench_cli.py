"""``rayfront bench``: run the sweep, re-render a report, or recommend settings from results.

Also reachable as ``python -m rayfront.benchmarks`` (the folder installs as
``rayfront.benchmarks``, so ``python -m benchmarks`` only works from the repository root
with the package importable under that name, which it is not). Heavy imports (numpy,
onnxruntime, matplotlib) happen inside the commands so ``rayfront --help`` stays fast.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Benchmarks: sweep rayfront and its baselines over concurrency and batching, with a report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _setup_logging(log_file: Path | None, verbose: bool) -> None:
    from rich.logging import RichHandler

    handlers: list[logging.Handler] = [RichHandler(show_path=False, rich_tracebacks=False)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(fh)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        handlers=handlers,
        force=True,
        format="%(message)s",
    )


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


@app.command("run")
def run_command(
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated models (mlp, cnn, resnet50). Default: mlp,cnn on CPU; all on cuda; mlp with --quick."
        ),
    ] = None,
    targets: Annotated[
        str,
        typer.Option(
            help="Comma-separated targets: raw, batcher, bare, serve, rayfront-http, rayfront-grpc."
        ),
    ] = "raw,batcher,bare,serve,rayfront-http,rayfront-grpc",
    concurrency: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated closed-loop concurrency levels. Default 1,4,16,64,128 (1,4 with --quick)."
        ),
    ] = None,
    batching: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated dynamic-batching settings for batcher/rayfront: 'off' or "
            "MAX_BATCH:DELAY_US[:xREPLICAS]. Default off,16:500,64:2000 (off,32:1000 with --quick)."
        ),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(
            help="Measured time per point, e.g. 10s, 500ms. Default 10s (1s with --quick)."
        ),
    ] = None,
    warmup: Annotated[
        str | None,
        typer.Option(help="Unmeasured warm-up per point. Default 2s (0.3s with --quick)."),
    ] = None,
    request_batch: Annotated[
        int, typer.Option(min=1, help="Rows per request (batch dim of each request).")
    ] = 1,
    p99_ms: Annotated[
        float | None,
        typer.Option(help="p99 bound for the knee and the recommendation (default per model)."),
    ] = None,
    target_rps: Annotated[
        float | None, typer.Option(help="Load (req/s) to size replicas for in the recommendation.")
    ] = None,
    device: Annotated[
        str, typer.Option(help="cpu or cuda (ONNX Runtime CUDA EP; needs onnxruntime-gpu).")
    ] = "cpu",
    tensorrt: Annotated[
        bool, typer.Option(help="On cuda, prefer ONNX Runtime's TensorRT EP.")
    ] = False,
    raw_batches: Annotated[
        str | None,
        typer.Option(help="Batch sizes for the raw sweep, e.g. 1,8,32 (default per model)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Results directory. Default benchmarks/results/<timestamp>.")
    ] = None,
    repository: Annotated[
        Path | None, typer.Option(help="Reuse this bench repository instead of exporting.")
    ] = None,
    startup_timeout: Annotated[
        float, typer.Option(help="Seconds each server may take to become ready.")
    ] = 240.0,
    grpc_channels: Annotated[int, typer.Option(min=1, help="gRPC client connections.")] = 4,
    quick: Annotated[
        bool, typer.Option("--quick", help="Smoke sizing: mlp, concurrency 1,4, 1 s points.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the sweep: raw limit, batcher, bare ASGI, plain Ray Serve and rayfront, one run.

    Writes results.json, results.csv, plots/*.png and summary.md into --out.
    """
    from pydantic import ValidationError

    from rayfront.benchmarks.run import sweep_config as bc
    from rayfront.benchmarks.run.bench_models import default_models, get_model
    from rayfront.errors import RayfrontError

    if device not in ("cpu", "cuda"):
        raise _fail(f"--device {device!r}: expected cpu or cuda")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = (out or Path("benchmarks/results") / stamp).resolve()
    try:
        model_names = (
            bc.parse_list(models, "--models")
            if models
            else (["mlp"] if quick else default_models(device))
        )
        for name in model_names:
            get_model(name)
        cfg = bc.SweepConfig(
            models=tuple(model_names),
            targets=tuple(bc.parse_list(targets, "--targets")),
            concurrency=tuple(
                bc.parse_ints(concurrency, "--concurrency")
                if concurrency
                else (bc.QUICK_CONCURRENCY if quick else bc.DEFAULT_CONCURRENCY)
            ),
            batching=tuple(
                bc.BatchingSetting.parse(b)
                for b in (
                    bc.parse_list(batching, "--batching")
                    if batching
                    else (bc.QUICK_BATCHING if quick else bc.DEFAULT_BATCHING)
                )
            ),
            duration_s=bc.parse_duration(duration or ("1s" if quick else "10s")),
            warmup_s=bc.parse_duration(warmup) if warmup else (0.3 if quick else 2.0),
            request_batch=request_batch,
            p99_ms=p99_ms,
            target_rps=target_rps,
            device=device,  # type: ignore[arg-type]
            tensorrt=tensorrt,
            raw_batches=tuple(bc.parse_ints(raw_batches, "--raw-batches")) if raw_batches else None,
            out=out_dir,
            repository=repository.resolve() if repository else None,
            startup_timeout_s=startup_timeout,
            grpc_channels=grpc_channels,
            quick=quick,
        )
    except RayfrontError as err:
        raise _fail(err.message) from None
    except ValidationError as err:
        raise _fail("; ".join(e["msg"] for e in err.errors())) from None

    _setup_logging(out_dir / "sweep.log", verbose)
    from rayfront.benchmarks.run.sweep import run_sweep

    # SIGTERM (a CI timeout, `kill`) takes the same path as Ctrl-C, so the finally blocks
    # stop every server this run started instead of orphaning them.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_sweep(cfg, show_progress=progress)
    except KeyboardInterrupt:
        typer.secho(
            f"interrupted; partial results in {out_dir} (render them with "
            f"`rayfront bench report {out_dir}`)",
            err=True,
            fg=typer.colors.YELLOW,
        )
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    _print_outcome(out_dir, result)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run_with_spinner(
    label: str, opts: Any, run: Callable[[Any], dict], progress: bool, out_dir: Path
) -> dict:
    """``run(opts)`` under a one-line progress display; SIGTERM and Ctrl-C stop it cleanly.

    ``opts.progress`` receives the run's status messages. On an interrupt the run's own
    finally blocks stop its servers, and this exits 130.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            disable=not progress, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task(label, total=None)
            opts.progress = lambda msg: bar.update(task, description=f"{label}: {msg}")
            return run(opts)
    except KeyboardInterrupt:
        typer.secho(f"interrupted; partial results in {out_dir}", err=True, fg=typer.colors.YELLOW)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_outcome(out_dir: Path, result: object) -> None:
    from rayfront.benchmarks.analysis.goals import evaluate
    from rayfront.benchmarks.analysis.results import SUMMARY_MD, SweepResult

    if not isinstance(result, SweepResult):
        return
    failed = [
        f"{m.model}/{t.label}" for m in result.models for t in m.targets if t.status != "ok"
    ] + [f"{m.model}/raw" for m in result.models if m.raw_status == "failed"]
    for g in evaluate(result):
        value = "—" if g.value is None else f"{g.value:.2f}"
        typer.echo(
            f"  {g.status:>12}  {g.name:<18} {value:>6} ({g.op} {g.threshold:g})  {g.detail}"
        )
    if failed:
        typer.secho(f"targets that did not run: {', '.join(failed)}", fg=typer.colors.YELLOW)
    typer.echo(f"summary: {out_dir / SUMMARY_MD}")


@app.command("ingress")
def ingress_command(
    out: Annotated[
        Path | None,
        typer.Option(help="Results directory (default benchmarks/results/ingress-<timestamp>)."),
    ] = None,
    ingress: Annotated[
        str, typer.Option(help="Comma-separated ingress (gateway) process counts to compare.")
    ] = "1,2",
    protocols: Annotated[
        str, typer.Option(help="Comma-separated rayfront protocols: http, grpc, shm.")
    ] = "http,grpc,shm",
    clients: Annotated[int, typer.Option(min=1, help="Client processes per point.")] = 2,
    conc: Annotated[int, typer.Option(min=1, help="Connections per client process.")] = 8,
    secs: Annotated[float, typer.Option(min=0.2, help="Measured seconds per point.")] = 5.0,
    quick: Annotated[
        bool, typer.Option("--quick", help="1 s points, one client (a smoke run).")
    ] = False,
    startup_timeout: Annotated[
        float, typer.Option(help="Seconds a server may take to become ready.")
    ] = 180.0,
    progress: Annotated[bool, typer.Option(help="Show a progress line per point.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Ingress bandwidth: 3x224x224 FP32 images into a nearly free model, in MB/s and img/s.

    rayfront over HTTP, gRPC and system shared memory with 1 and N ingress processes,
    against a bare uvicorn server with as many workers and a one-core memcpy, in one run.
    """
    from rayfront.benchmarks.run.bandwidth import IngressOptions, run_ingress, summary_markdown

    _setup_logging(None, verbose)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = out or Path("benchmarks/results") / f"ingress-{stamp}"
    try:
        counts = tuple(int(x) for x in ingress.split(",") if x.strip())
    except ValueError:
        raise _fail(f"--ingress {ingress!r}: expected comma-separated integers, e.g. 1,2") from None
    protos = tuple(p.strip() for p in protocols.split(",") if p.strip())
    bad = sorted(set(protos) - {"http", "grpc", "shm"})
    if bad or not protos or not counts or min(counts) < 1:
        raise _fail(f"--protocols {protocols!r} / --ingress {ingress!r}: see --help")
    opts = IngressOptions(
        out=out_dir,
        ingress=counts,
        protocols=protos,
        clients=1 if quick else clients,
        conc=min(conc, 4) if quick else conc,
        secs=1.0 if quick else secs,
        warmup_s=0.5 if quick else 1.0,
        startup_timeout_s=startup_timeout,
    )
    doc = _run_with_spinner("ingress", opts, run_ingress, progress, out_dir)
    typer.echo(summary_markdown(doc))
    typer.echo(f"results: {out_dir / 'ingress.json'}")
    if doc.get("failures"):
        raise typer.Exit(1)


@app.command("soak")
def soak_command(
    minutes: Annotated[float, typer.Option(min=0.1, help="How long to run.")] = 10.0,
    clients: Annotated[int, typer.Option(min=1, help="Client threads.")] = 8,
    invalid: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of hostile requests (0..1).")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the request mix.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="Results directory (default benchmarks/results/soak-<timestamp>)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress line.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Soak: mixed valid and invalid HTTP/gRPC traffic for N minutes against rayfront serve.

    Reports sent / ok / refused / wrong / failed / lost and the growth of the server's RSS
    and file descriptors (soak.json, soak.csv, soak.png, summary.md). Exits 1 when any
    request was wrong, failed or lost. Not part of CI: run it on an otherwise idle machine.
    """
    from rayfront.benchmarks.run.soak import SoakOptions, run_soak, summary_markdown

    _setup_logging(None, verbose)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = out or Path("benchmarks/results") / f"soak-{stamp}"
    opts = SoakOptions(
        out=out_dir, minutes=minutes, clients=clients, invalid_share=invalid, seed=seed
    )
    doc = _run_with_spinner("soak", opts, run_soak, progress, out_dir)
    typer.echo(summary_markdown(doc))
    typer.echo(f"results: {out_dir / 'soak.json'}")
    if doc["wrong"] or doc["failed"] or doc["lost"]:
        raise typer.Exit(1)


@app.command("report")
def report_command(
    results: Annotated[Path, typer.Argument(help="Results directory (or its results.json).")],
    p99_ms: Annotated[
        float | None,
        typer.Option(help="Re-evaluate knees and the recommendation at this p99 bound."),
    ] = None,
    target_rps: Annotated[
        float | None, typer.Option(help="Load (req/s) to size replicas for.")
    ] = None,
) -> None:
    """Re-render CSV, plots and summary.md from a results.json."""
    from rayfront.benchmarks.analysis.report import write_report
    from rayfront.benchmarks.analysis.results import load_json
    from rayfront.errors import RayfrontError

    try:
        result = load_json(results)
    except RayfrontError as err:
        raise _fail(err.message) from None
    if p99_ms is not None:
        for m in result.models:
            m.p99_bound_ms = p99_ms
    out_dir = results if results.is_dir() else results.parent
    files = write_report(result, out_dir, p99_ms=p99_ms, target_rps=target_rps)
    typer.echo(f"summary: {files.summary}")


@app.command("recommend")
def recommend_command(
    results: Annotated[Path, typer.Argument(help="Results directory (or its results.json).")],
    p99_ms: Annotated[
        float | None, typer.Option(help="p99 target in ms (default: the run's bound per model).")
    ] = None,
    target_rps: Annotated[
        float | None, typer.Option(help="Load (req/s) to size replicas for.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
) -> None:
    """Recommend max_batch_size, queue delay and replicas for a p99 target, and how to apply them."""
    from rayfront.benchmarks.analysis.knee import recommend
    from rayfront.benchmarks.analysis.results import load_json
    from rayfront.errors import RayfrontError

    try:
        result = load_json(results)
    except RayfrontError as err:
        raise _fail(err.message) from None
    chosen = [m for m in result.models if model is None or m.model == model]
    if not chosen:
        raise _fail(
            f"model {model!r} is not in {results}; it has {[m.model for m in result.models]}"
        )
    for m in chosen:
        rec = recommend(
            m,
            p99_ms=p99_ms,
            target_rps=target_rps,
            cpu_count=result.meta.cpu_count,
            device=result.meta.config.device,
        )
        typer.secho(f"{m.model} (p99 <= {rec.p99_target_ms:g} ms)", bold=True)
        if rec.feasible:
            mb = "off" if rec.max_batch_size is None else rec.max_batch_size
            typer.echo(
                f"  max_batch_size {mb}, max_queue_delay_microseconds {rec.max_queue_delay_us}, replicas {rec.replicas}"
            )
        for note in rec.notes:
            typer.echo(f"  - {note}")
        if rec.feasible:
            typer.echo("  config.pbtxt:\n" + _indent(rec.config_pbtxt, 4))
            typer.echo("  Serve config override:\n" + _indent(rec.serve_yaml, 4))


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line for line in text.rstrip().splitlines())
