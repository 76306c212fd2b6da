"""``rayfront drift report MODEL``: live data in the payload log against the export reference.

Reads the version's reference profile from its sidecar and the logged requests of that
version (:mod:`rayfront.payload_log`), bins the live tensors over the reference's bins,
and prints PSI and KS per input and output with a verdict; ``--plot`` writes a PNG of the
reference and live distributions side by side. Works offline: no server needed, only the
repository and the log directory.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from rayfront.drift import ReferenceProfile, bin_counts, ks_binned, psi, verdict
from rayfront.errors import NotFoundError, RayfrontError
from rayfront.payload_log import decode_tensor, read_records

app = typer.Typer(
    help="Data drift of live requests (payload log) against each version's export reference.",
    no_args_is_help=True,
)


@dataclass
class TensorDrift:
    """Drift of one tensor over the logged requests."""

    role: str
    tensor: str
    kind: str
    samples: int
    psi: float
    ks: float | None
    live_mean: float
    reference_mean: float
    verdict: str


@dataclass
class DriftReport:
    model: str
    version: str
    reference_source: str
    requests: int
    tensors: list[TensorDrift]
    live: dict[str, list[float]]  # "role:tensor" -> live counts (for the plot)


def latest_logged_version(log_dir: Path, model: str) -> str:
    versions = {rec.get("version") for rec in read_records(log_dir, model)}
    versions.discard(None)
    if not versions:
        raise NotFoundError(f"no payload log records for model {model!r} in {log_dir}")
    return max(versions, key=lambda v: int(v) if str(v).isdigit() else -1)


def compute_report(
    reference: ReferenceProfile, log_dir: Path, model: str, version: str
) -> DriftReport:
    """Bin every logged request of ``model`` version ``version`` over the reference (pure I/O
    on the log; no server)."""
    profiles = reference.tensors()
    counts = {key: np.zeros(len(p.freqs)) for key, p in profiles.items()}
    sums = dict.fromkeys(profiles, 0.0)
    elements = dict.fromkeys(profiles, 0)
    requests = 0
    for rec in read_records(log_dir, model, version):
        requests += 1
        for (role, name), prof in profiles.items():
            entry = rec.get(f"{role}s", {}).get(name)
            arr = decode_tensor(entry, name=name, model=model) if entry else None
            if arr is None:
                continue
            counts[(role, name)] += bin_counts(prof, arr)
            floats = np.asarray(arr, dtype=np.float64)
            sums[(role, name)] += float(floats.sum())
            elements[(role, name)] += int(floats.size)
    if requests == 0:
        raise NotFoundError(
            f"no payload log records for model {model!r} version {version} in {log_dir}"
        )
    tensors = []
    for (role, name), prof in profiles.items():
        c = counts[(role, name)]
        value = psi(prof.freqs, c)
        tensors.append(
            TensorDrift(
                role=role,
                tensor=name,
                kind=prof.kind,
                samples=int(c.sum()),
                psi=value,
                ks=ks_binned(prof.freqs, c) if prof.kind == "continuous" else None,
                live_mean=sums[(role, name)] / max(elements[(role, name)], 1),
                reference_mean=prof.mean,
                verdict=verdict(value) if c.sum() else "no data",
            )
        )
    return DriftReport(
        model=model,
        version=version,
        reference_source=reference.source,
        requests=requests,
        tensors=tensors,
        live={f"{r}:{n}": c.tolist() for (r, n), c in counts.items()},
    )


def plot_report(report: DriftReport, reference: ReferenceProfile, path: Path) -> Path:
    """Reference vs live share per bin, one panel per tensor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = {f"{role}:{name}": p for (role, name), p in reference.tensors().items()}
    fig, axes = plt.subplots(len(profiles), 1, figsize=(8, 2.6 * len(profiles)), squeeze=False)
    by_key = {f"{t.role}:{t.tensor}": t for t in report.tensors}
    for ax, (key, prof) in zip(axes[:, 0], profiles.items(), strict=True):
        live = np.asarray(report.live[key], dtype=np.float64)
        live = live / live.sum() if live.sum() else live
        x = np.arange(len(prof.freqs))
        ax.bar(x - 0.2, prof.freqs, width=0.4, label="reference")
        ax.bar(x + 0.2, live, width=0.4, label="live")
        if prof.kind == "categorical":
            labels = [str(c) for c in prof.categories] + ["other"]
        else:
            edges = ["-inf", *(f"{e:.3g}" for e in prof.edges), "inf"]
            labels = [f"{a}..{b}" for a, b in itertools.pairwise(edges)]
        ax.set_xticks(x, labels, rotation=45, fontsize=7)
        t = by_key[key]
        ax.set_title(f"{key}  PSI {t.psi:.3f} ({t.verdict})", fontsize=9)
        ax.set_ylabel("share")
        ax.legend(fontsize=7)
    fig.suptitle(f"{report.model} v{report.version}: {report.requests} logged requests")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@app.command("report")
def report_command(
    model: Annotated[str, typer.Argument(help="Model name.")],
    payload_log: Annotated[
        Path, typer.Option("--payload-log", help="The server's payload_log directory.")
    ],
    repository: Annotated[
        Path, typer.Option("--repository", "-r", help="Model repository (for the reference).")
    ] = Path("model_repository"),
    version: Annotated[
        str, typer.Option(help="Version to report; default: the newest one in the log.")
    ] = "",
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of reference vs live distributions.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """PSI and KS of each input and output of MODEL's logged requests against its reference.

    PSI below 0.1 is stable, 0.1-0.25 a moderate shift, above 0.25 a significant one.
    Example: rayfront drift report digits --payload-log /var/log/rayfront/payloads --plot drift.png
    """
    from rayfront.repository.sidecar import read_sidecar

    try:
        version = version or latest_logged_version(payload_log, model)
        prov = read_sidecar(repository / model / version)
        if prov is None or prov.reference is None:
            raise NotFoundError(
                f"model {model!r} version {version} has no reference profile in "
                f"{repository / model / version}; re-export it (rayfront export --reference)"
            )
        report = compute_report(prov.reference, payload_log, model, version)
        if plot is not None:
            plot_report(report, prov.reference, plot)
    except RayfrontError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        doc = asdict(report)
        doc.pop("live")
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{model} v{version}: {report.requests} logged requests vs "
        f"reference ({report.reference_source})"
    )
    for col in ("tensor", "kind", "elements", "PSI", "KS", "mean live / ref", "verdict"):
        table.add_column(col)
    for t in report.tensors:
        table.add_row(
            f"{t.role} {t.tensor}",
            t.kind,
            str(t.samples),
            f"{t.psi:.3f}",
            "-" if t.ks is None else f"{t.ks:.3f}",
            f"{t.live_mean:.3g} / {t.reference_mean:.3g}",
            t.verdict,
        )
    Console().print(table)
    if plot is not None:
        typer.echo(f"plot: {plot}")
