"""placeholder: `rayfront repo` (owned by the repository helper)."""

import typer

app = typer.Typer(help="Inspect and validate a Triton model repository.", no_args_is_help=True)


@app.command("list")
def list_command() -> None:
    """List models and versions."""
