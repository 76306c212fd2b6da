"""Shared helpers for the export tests: user model files and repository snapshots."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

USER_MODELS = textwrap.dedent(
    """
    import torch

    class Diverge(torch.nn.Module):
        # Computes something else while being exported: parity must catch it.
        def forward(self, x):
            if torch.onnx.is_in_onnx_export():
                return x * 2
            return x

    def diverging():
        return Diverge()

    class Echo(torch.nn.Module):
        # Output length follows the dynamic input length.
        def forward(self, ids):
            return ids * 2

    def echo():
        return Echo()

    def scalar_out():
        class Sum(torch.nn.Module):
            def forward(self, x):
                return x.sum(dim=1)
        return Sum()
    """
)


def write_user_models(folder: Path) -> Path:
    """Write the user-model file into ``folder``; returns its path."""
    path = folder / "user_models.py"
    path.write_text(USER_MODELS)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``'s parent (staging folders too) -> sha256 of its bytes."""
    out: dict[str, str] = {}
    base = root.parent
    for path in sorted(base.rglob("*")):
        rel = str(path.relative_to(base))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out
