"""placeholder: `rayfront canary` (owned by the canary helper)."""

import typer

app = typer.Typer(help="Canary rollouts: weights, shadow traffic, progressive delivery.", no_args_is_help=True)


@app.command("status")
def status_command() -> None:
    """Show rollout state."""
