"""Model factories for canary tests, exported through ``rayfront export`` by file path.

``broken_digits`` is the trained digits CNN with its output rows rotated by one class: a
real, confidently wrong model (accuracy ~0), the kind of defect a canary must catch.
"""

from __future__ import annotations

from typing import Any


def broken_digits() -> Any:
    import torch

    from rayfront.export.demos.digits import factory

    model = factory()
    last = model.head[-1]
    with torch.no_grad():
        last.weight.copy_(torch.roll(last.weight, shifts=1, dims=0))
        last.bias.copy_(torch.roll(last.bias, shifts=1, dims=0))
    return model
