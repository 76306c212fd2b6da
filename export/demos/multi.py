"""A tiny two-input, two-output model with mixed dtypes, for tests and as an example.

Inputs: ``features`` FP32 [4] and ``ids`` INT64 [-1] (a variable-length id list per request).
Outputs: ``scores`` FP32 [3] and ``nonzero`` INT64 [1] (how many ids are not 0). Export it::

    rayfront export rayfront.export.demos.multi:factory --name multi \\
        --input features:FP32:4 --input ids:INT64:-1 \\
        --output scores --output nonzero --max-batch-size 8
"""

from __future__ import annotations

from typing import Any

VOCAB = 16
INPUTS = ("features:FP32:4", "ids:INT64:-1")
OUTPUTS = ("scores", "nonzero")


def _build() -> Any:
    import torch

    class TwoInput(torch.nn.Module):
        """Mean of id embeddings next to the features, then a linear layer."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, 4)
            self.linear = torch.nn.Linear(8, 3)

        def forward(self, features: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
            pooled = self.embed(ids).mean(dim=1)
            scores = self.linear(torch.cat([features, pooled], dim=1))
            nonzero = (ids != 0).sum(dim=1, keepdim=True)
            return {"scores": scores, "nonzero": nonzero}

    return TwoInput


def factory() -> Any:
    """A seeded (deterministic) TwoInput model in eval mode."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _build()()
    return model.eval()
