"""placeholder: `rayfront export` (owned by the export helper)."""


def export_command() -> None:
    """Export a PyTorch model into the model repository."""
