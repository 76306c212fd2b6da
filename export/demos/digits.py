"""Demo model 1: a small CNN trained on scikit-learn's bundled 8x8 handwritten digits.

Nothing is downloaded: ``sklearn.datasets.load_digits`` ships with scikit-learn. Training
is seeded and single-threaded, so every run builds the same weights, and takes a few
seconds on two cores. The held-out split measures real accuracy (about 0.98), which the
export records in the version's sidecar.

Tensors: input ``pixels`` FP32 [1, 8, 8] (values in [0, 1], batch dim implicit); outputs
``logits`` FP32 [10] and ``probabilities`` FP32 [10]. Export it::

    rayfront export rayfront.export.demos.digits:factory --name digits \\
        --input pixels:FP32:1,8,8 --output logits --output probabilities --max-batch-size 64
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

NAME = "digits"
INPUTS = ("pixels:FP32:1,8,8",)
OUTPUTS = ("logits", "probabilities")
MAX_BATCH_SIZE = 64
SEED = 0
EPOCHS = 30
MIN_ACCURACY = 0.95
SAMPLES_FILE = "samples.npz"


@dataclass(frozen=True)
class DigitsData:
    """Train/test split of load_digits, images scaled to [0, 1] as [N, 1, 8, 8] float32."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@functools.cache
def load_data() -> DigitsData:
    """The bundled dataset, split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16 in this dataset.
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target.astype(np.int64),
        test_size=0.2,
        random_state=SEED,
        stratify=digits.target,
    )
    return DigitsData(x_train, y_train, x_test, y_test)


def _build() -> Any:
    import torch
    from torch import nn

    class DigitsCNN(nn.Module):
        """conv(16) -> conv(32) -> pool -> fc(64) -> fc(10); softmax as a second output."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
            )

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.head(self.features(pixels))
            return logits, torch.softmax(logits, dim=-1)

    return DigitsCNN()


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Share of ``x`` the model classifies as ``y``."""
    import torch

    with torch.no_grad():
        logits, _ = model(torch.from_numpy(x))
    return float((logits.argmax(dim=1).numpy() == y).mean())


@functools.cache
def _trained_state() -> tuple[dict[str, Any], float]:
    import torch

    data = load_data()
    threads = torch.get_num_threads()
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        # One thread keeps the float sums in a fixed order: the same weights every run.
        torch.set_num_threads(1)
        try:
            model = _build()
            optim = torch.optim.Adam(model.parameters(), lr=3e-3)
            loss_fn = torch.nn.CrossEntropyLoss()
            x = torch.from_numpy(data.x_train)
            y = torch.from_numpy(data.y_train)
            gen = torch.Generator().manual_seed(SEED)
            model.train()
            for _ in range(EPOCHS):
                order = torch.randperm(len(x), generator=gen)
                for start in range(0, len(x), 64):
                    idx = order[start : start + 64]
                    optim.zero_grad()
                    logits, _ = model(x[idx])
                    loss_fn(logits, y[idx]).backward()
                    optim.step()
            model.eval()
            acc = accuracy(model, data.x_test, data.y_test)
        finally:
            torch.set_num_threads(threads)
    logger.info("digits CNN trained: held-out accuracy %.4f", acc)
    if acc < MIN_ACCURACY:
        raise RuntimeError(
            f"digits CNN reached only {acc:.3f} held-out accuracy (< {MIN_ACCURACY})"
        )
    return model.state_dict(), acc


def factory() -> Any:
    """The trained CNN in eval mode, carrying its held-out accuracy as provenance."""
    state, acc = _trained_state()
    model = _build()
    model.load_state_dict(state)
    model.eval()
    data = load_data()
    model.rayfront_provenance = {
        "dataset": "sklearn.datasets.load_digits (80/20 stratified split, seed 0)",
        "test_accuracy": round(acc, 4),
        "test_samples": len(data.y_test),
    }
    return model


def heldout_samples(count: int = MAX_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` held-out images [count, 1, 8, 8] FP32 and their labels.

    The default fits one request: the model's max_batch_size.
    """
    data = load_data()
    return data.x_test[:count], data.y_test[:count]


def write_reference(path: Path) -> Path:
    """The training images as the drift reference (``pixels``; ``rayfront export --reference``)."""
    np.savez(path, pixels=load_data().x_train)
    return path


def write_samples(path: Path, count: int = MAX_BATCH_SIZE) -> Path:
    """Save held-out images and labels (``pixels``, ``labels``) for clients and tests."""
    pixels, labels = heldout_samples(count)
    np.savez(path, pixels=pixels, labels=labels)
    return path
