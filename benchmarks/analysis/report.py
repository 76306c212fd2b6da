"""Report of a sweep: results.json, results.csv, PNG plots and a markdown summary.

The summary states, per model, each target's knee (highest throughput with p99 under the
bound) as ratios to the raw ONNX Runtime limit and to the bare ASGI baseline, then the
issue's performance goals (met / not met / not measured) and the recommendation. Plots:
throughput against concurrency, and p50/p99 latency against throughput, one line per
target. :func:`write_report` regenerates everything from a :class:`SweepResult`, so
``rayfront bench report DIR`` can redo it from results.json alone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from rayfront.benchmarks.analysis.goals import GoalCheck, evaluate
from rayfront.benchmarks.analysis.knee import Recommendation, recommend, target_knee
from rayfront.benchmarks.analysis.results import (
    PLOTS_DIR,
    SUMMARY_MD,
    ModelResult,
    SweepResult,
    write_csv,
    write_json,
)
from rayfront.benchmarks.run.sweep_config import TARGET_DESCRIPTIONS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    json: Path
    csv: Path
    summary: Path
    plots: list[Path]


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den <= 0:
        return "—"
    ratio = num / den
    # Two decimals hide small ratios (a server at 0.004x of a tiny model's raw limit).
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


# --- plots --------------------------------------------------------------------------------


def _plt():  # returns the pyplot module (imported lazily, Agg backend)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_throughput(model: ModelResult, path: Path) -> Path:
    """rows/s against concurrency, one line per target, raw limit as a dashed line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for t in model.targets:
        pts = sorted((p for p in t.points if p.requests > 0), key=lambda p: p.concurrency)
        if t.status != "ok" or not pts:
            continue
        ax.plot(
            [p.concurrency for p in pts], [p.rows_per_s for p in pts], marker="o", label=t.label
        )
    raw = model.raw_limit
    if raw is not None:
        ax.axhline(
            raw.rows_per_s,
            color="black",
            linestyle="--",
            label=f"raw limit (batch {raw.batch_size})",
        )
    levels = sorted({p.concurrency for t in model.targets for p in t.points})
    ax.set_xscale("log", base=2)
    if levels:
        ax.set_xticks(levels, [str(c) for c in levels])
    # Log scale: the raw limit of a tiny model is orders of magnitude above any server.
    ax.set_yscale("log")
    ax.set_xlabel("concurrency (closed-loop clients)")
    ax.set_ylabel("throughput (rows/s, log scale)")
    ax.set_title(f"{model.model}: throughput vs concurrency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(model: ModelResult, path: Path) -> Path:
    """p50 (left) and p99 (right) latency against rows/s, one line per target."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, attr, title in ((axes[0], "p50_ms", "p50"), (axes[1], "p99_ms", "p99")):
        for t in model.targets:
            pts = sorted(
                (p for p in t.points if p.requests > 0 and p.latency is not None),
                key=lambda p: p.concurrency,
            )
            if t.status != "ok" or not pts:
                continue
            ax.plot(
                [p.rows_per_s for p in pts],
                [getattr(p, attr) for p in pts],
                marker="o",
                label=t.label,
            )
        if attr == "p99_ms":
            ax.axhline(
                model.p99_bound_ms,
                color="red",
                linestyle=":",
                label=f"p99 bound {model.p99_bound_ms:g} ms",
            )
        ax.set_yscale("log")
        ax.set_xlabel("throughput (rows/s)")
        ax.set_title(f"{model.model}: {title} latency vs throughput")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- markdown -----------------------------------------------------------------------------


def _goal_rows(checks: list[GoalCheck]) -> list[str]:
    lines = ["| goal | measured | target | status | detail |", "|---|---|---|---|---|"]
    for g in checks:
        value = "—" if g.value is None else f"{g.value:.2f}"
        mark = {"met": "✅ met", "not met": "❌ not met", "not measured": "⚪ not measured"}[
            g.status
        ]
        lines.append(f"| {g.statement} | {value} | {g.op} {g.threshold:g} | {mark} | {g.detail} |")
    return lines


def _model_section(model: ModelResult, rec: Recommendation) -> list[str]:
    lines = [f"## {model.model}: {model.description}", ""]
    raw = model.raw_limit
    if raw is not None:
        lines.append(
            f"Raw limit: **{raw.rows_per_s:,.1f} rows/s** (ONNX Runtime session.run at batch "
            f"{raw.batch_size}, p50 {_fmt(raw.latency.p50_ms if raw.latency else None, 2)} ms per call)."
        )
    else:
        lines.append(
            f"Raw limit: not measured ({model.raw_status}: {model.raw_reason or 'not selected'})."
        )
    lines.append(
        f"Knee = highest throughput with p99 ≤ {model.p99_bound_ms:g} ms and no errors. "
        f"Export: {model.export or 'n/a'}."
    )
    lines.append("")
    bare = model.target("bare")
    bare_knee = target_knee(bare, model.p99_bound_ms) if bare else None
    lines.append(
        "| target | batching | knee conc. | rows/s | req/s | p50 ms | p99 ms | x raw | x bare ASGI | max rows/s (any p99) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    failed: list[str] = []
    for t in model.targets:
        if t.status != "ok":
            failed.append(
                f"- **{t.label}** {t.status}: {(t.reason or '').strip().splitlines()[0] if t.reason else ''}"
            )
            continue
        k = target_knee(t, model.p99_bound_ms)
        peak = max((p.rows_per_s for p in t.points), default=None)
        if k is None:
            lines.append(
                f"| {t.target} | {t.batching or '—'} | none under bound | — | — | — | — | — | — | {_fmt(peak)} |"
            )
            continue
        lines.append(
            f"| {t.target} | {t.batching or '—'} | {k.concurrency} | {_fmt(k.rows_per_s, 1)} | "
            f"{_fmt(k.req_per_s, 1)} | {_fmt(k.p50_ms, 2)} | {_fmt(k.p99_ms, 2)} | "
            f"{_ratio(k.rows_per_s, raw.rows_per_s if raw else None)} | "
            f"{_ratio(k.rows_per_s, bare_knee.rows_per_s if bare_knee else None)} | {_fmt(peak)} |"
        )
    if failed:
        lines += ["", "Targets that did not run:", *failed]
    lines += [
        "",
        f"![throughput vs concurrency]({PLOTS_DIR}/{model.model}_throughput.png)",
        f"![latency vs throughput]({PLOTS_DIR}/{model.model}_latency.png)",
        "",
        f"### Recommendation for {model.model} (p99 ≤ {rec.p99_target_ms:g} ms)",
        "",
    ]
    if rec.feasible:
        mb = "off (no dynamic_batching)" if rec.max_batch_size is None else str(rec.max_batch_size)
        lines.append(
            f"**max_batch_size {mb}, max_queue_delay_microseconds {rec.max_queue_delay_us}, "
            f"replicas {rec.replicas}** (from {rec.source})."
        )
    lines += ["", *[f"- {n}" for n in rec.notes]]
    if rec.feasible:
        lines += [
            "",
            f"Apply in `model_repository/{model.model}/config.pbtxt` (these fields; keep inputs/outputs):",
            "",
            "```protobuf",
            rec.config_pbtxt.rstrip(),
            "```",
            "",
            "or override replicas without touching the repository, in the Serve config from "
            "`rayfront serve --print-config` (then `rayfront serve --config serve.yaml` or `serve deploy serve.yaml`):",
            "",
            "```yaml",
            rec.serve_yaml.rstrip(),
            "```",
        ]
    return [*lines, ""]


def summary_markdown(
    result: SweepResult,
    recommendations: dict[str, Recommendation],
    checks: list[GoalCheck],
) -> str:
    """The markdown summary (see benchmarks/README.md for how to read it)."""
    meta = result.meta
    cfg = meta.config
    versions = ", ".join(f"{k} {v}" for k, v in sorted(meta.versions.items()))
    lines = [
        f"# rayfront benchmark, {meta.started_at}",
        "",
        f"- Host: {meta.host}, {meta.cpu_count} CPUs, {meta.platform}, Python {meta.python}; device {cfg.device}.",
        f"- Versions: {versions}.",
        f"- Load generator: {meta.client}.",
        f"- Per point: {cfg.warmup_s:g} s warm-up + {cfg.duration_s:g} s measured; "
        f"{cfg.request_batch} row(s) per request; concurrency {', '.join(map(str, cfg.concurrency))}.",
        "- Every figure below comes from this one run on this one machine; compare ratios, not "
        "absolute numbers across machines. Models have random weights: speed does not depend on them.",
    ]
    if cfg.quick:
        lines.append(
            "- **Quick (smoke) run**: durations too short for the numbers to mean anything."
        )
    lines += ["", "## Goals", "", *_goal_rows(checks), ""]
    lines += ["## Targets", ""]
    lines += [
        f"- `{name}`: {desc}" for name, desc in TARGET_DESCRIPTIONS.items() if name in cfg.targets
    ]
    lines.append("")
    for m in result.models:
        lines += _model_section(m, recommendations[m.model])
    return "\n".join(lines)


def write_report(
    result: SweepResult,
    out_dir: Path,
    p99_ms: float | None = None,
    target_rps: float | None = None,
) -> ReportFiles:
    """Write JSON, CSV, plots and summary.md into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = write_json(result, out_dir)
    csv_path = write_csv(result, out_dir)
    plots_dir = out_dir / PLOTS_DIR
    plots_dir.mkdir(exist_ok=True)
    plots: list[Path] = []
    for m in result.models:
        plots.append(plot_throughput(m, plots_dir / f"{m.model}_throughput.png"))
        plots.append(plot_latency(m, plots_dir / f"{m.model}_latency.png"))
    cfg = result.meta.config
    recs = {
        m.model: recommend(
            m,
            p99_ms=p99_ms,
            target_rps=target_rps if target_rps is not None else cfg.target_rps,
            cpu_count=result.meta.cpu_count,
            device=cfg.device,
        )
        for m in result.models
    }
    checks = evaluate(result)
    summary = out_dir / SUMMARY_MD
    summary.write_text(summary_markdown(result, recs, checks), encoding="utf-8")
    logger.info("report written to %s", out_dir)
    return ReportFiles(json=json_path, csv=csv_path, summary=summary, plots=plots)
