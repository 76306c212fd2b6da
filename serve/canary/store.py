"""Durable storage of canary documents: ``<repository>/<model>/rollout.json``, written atomically.

Why next to the model: the rollout state travels with the repository (copy, rsync, volume
snapshot) and is found by model name with no extra configuration.

Is that safe for a stock Triton server reading the same repository? Triton enumerates
versions from the *sub-directories* of a model directory whose names parse as integers
(``model_repository_manager.cc``: anything else is logged as "ignore version directory ...
which fails to convert to integral number"), and it reads only ``config.pbtxt`` plus files
the config names (label files). A plain ``rollout.json`` file, and the ``.rollout.json.*.tmp``
file that exists for a moment during a write, are therefore ignored in the NONE and EXPLICIT
model-control modes. One caveat: in POLL mode Triton fingerprints the modification time of
*every* entry in the model directory (``ModelTimestamp``), so each rollout step would make a
polling Triton reload that model (without losing availability, but needlessly). Sites that
point a polling Triton at the same repository should pass ``state_dir`` to keep the
documents elsewhere (``<state_dir>/<model>.rollout.json``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from rayfront.canary.state import ModelTraffic
from rayfront.errors import NotFoundError, RepositoryError
from rayfront.repository._fs import atomic_write_bytes

logger = logging.getLogger(__name__)

STATE_FILENAME = "rollout.json"


class CanaryStore:
    """Load and save one :class:`ModelTraffic` document per model."""

    def __init__(self, repository_root: Path | str, *, state_dir: Path | str | None = None) -> None:
        self.root = Path(repository_root)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if not self.root.is_dir():
            raise NotFoundError(f"model repository {str(self.root)!r} is not a directory")

    def _model_dir(self, model: str) -> Path:
        # A model name is a folder name; refuse anything that could escape the repository.
        if not model or model in {".", ".."} or "/" in model or "\\" in model or "\0" in model:
            raise NotFoundError(f"model {model!r} is not a valid model name")
        model_dir = self.root / model
        if not model_dir.is_dir():
            raise NotFoundError(f"model {model!r} not found in repository {str(self.root)!r}")
        return model_dir

    def path_for(self, model: str) -> Path:
        """Where the document of ``model`` lives (the model must exist in the repository)."""
        model_dir = self._model_dir(model)
        if self.state_dir is not None:
            return self.state_dir / f"{model}.{STATE_FILENAME}"
        return model_dir / STATE_FILENAME

    def load(self, model: str) -> ModelTraffic | None:
        """The saved document, or None when the model has none yet.

        Raises NotFoundError for an unknown model and RepositoryError for a corrupt file
        (never silently falling back to defaults: that would reset live weights).
        """
        path = self.path_for(model)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            doc = ModelTraffic.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise RepositoryError(
                f"canary state {str(path)!r} of model {model!r} is unreadable: {exc}; "
                "fix or remove the file (removing it resets the model's traffic split)"
            ) from exc
        if doc.model != model:
            raise RepositoryError(
                f"canary state {str(path)!r} names model {doc.model!r}, expected {model!r}"
            )
        return doc

    def save(self, doc: ModelTraffic) -> Path:
        """Write ``doc`` atomically (temp file + fsync + rename); returns the path."""
        path = self.path_for(doc.model)
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        data = doc.model_dump_json(indent=2).encode("utf-8") + b"\n"
        atomic_write_bytes(path, data)
        logger.debug("saved canary state of model %r to %s", doc.model, path)
        return path

    @contextlib.contextmanager
    def exclusive(self, model: str) -> Iterator[None]:
        """Hold the model's document against other processes for a read-modify-write.

        Every gateway process may take an admin call or run the evaluation; without the
        lock two of them could each read, change and save, and one change would be lost.
        """
        path = self.path_for(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def models(self) -> list[str]:
        """Models that have a saved document."""
        if self.state_dir is not None:
            if not self.state_dir.is_dir():
                return []
            suffix = f".{STATE_FILENAME}"
            names = [p.name[: -len(suffix)] for p in self.state_dir.glob(f"*{suffix}")]
            return sorted(n for n in names if (self.root / n).is_dir())
        return sorted(p.parent.name for p in self.root.glob(f"*/{STATE_FILENAME}") if p.is_file())

    def fingerprint(self, model: str) -> tuple[int, int, int] | None:
        """(inode, mtime_ns, size) of the document, for cheap change detection by followers.

        Every save replaces the file (new inode), so two saves within the file system's
        timestamp granularity still differ.
        """
        try:
            st = self.path_for(model).stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)
