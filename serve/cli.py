"""The ``rayfront`` command: export, repo, serve, canary, bench, demo, dashboard, drift.

Each sub-command lives beside the concept it drives; this module only assembles them.
Sub-command modules import heavy libraries (torch, ray) inside their functions so that
``rayfront --help`` stays fast.
"""

from __future__ import annotations

import typer

from rayfront.benchmarks.run.bench_cli import app as bench_app
from rayfront.canary.canary_cli import app as canary_app
from rayfront.dashboard import dashboard_command
from rayfront.demo import demo_command
from rayfront.deploy.serve_cli import serve_command
from rayfront.drift_report import app as drift_app
from rayfront.export.export_cli import export_command
from rayfront.repository.repo_cli import app as repo_app

app = typer.Typer(
    name="rayfront",
    help=(
        "Export PyTorch models into a Triton model repository (ONNX, TensorRT on NVIDIA GPUs), "
        "serve it through Ray Serve over KServe v2 HTTP and gRPC, and roll out new versions "
        "with canaries."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("export")(export_command)
app.add_typer(repo_app, name="repo")
app.command("serve")(serve_command)
app.add_typer(canary_app, name="canary")
app.add_typer(bench_app, name="bench")
app.command("demo")(demo_command)
app.command("dashboard")(dashboard_command)
app.add_typer(drift_app, name="drift")


def main() -> None:
    """Console-script entry point."""
    app()
