"""placeholder: `rayfront serve` and `rayfront demo` (owned by the integrator)."""

import typer


def serve_command() -> None:
    """Serve a model repository through Ray Serve (KServe v2 HTTP + gRPC)."""
    raise typer.Exit(2)


def demo_command() -> None:
    """Export the demo models, serve them and send real requests."""
    raise typer.Exit(2)
