"""placeholder: `rayfront bench` (owned by the benchmarks helper)."""

import typer

app = typer.Typer(help="Benchmarks: Locust sweeps against baselines, with a report.", no_args_is_help=True)


@app.command("run")
def run_command() -> None:
    """Run the sweep."""
