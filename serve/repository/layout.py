"""Read-only view of a Triton model repository on disk.

Triton's layout::

    <root>/<model>/config.pbtxt
    <root>/<model>/<version>/model.onnx | model.plan | model.pt   (+ rayfront.json)

Version folders are positive integers without leading zeros; Triton ignores any other
folder name, and so does this class. Hidden entries (``.something``) are never models:
they are temp files and staging folders.
"""

from __future__ import annotations

from pathlib import Path

from rayfront.errors import InvalidArgumentError, NotFoundError, RepositoryError
from rayfront.repository.pbtxt import CONFIG_NAME, read_config
from rayfront.repository.sidecar import Provenance, read_sidecar
from rayfront.spec import ModelSpec, VersionPolicy


def is_version_name(name: str) -> bool:
    """True for folder names Triton loads as versions: ``1``, ``12``; not ``0``, ``01``, ``v1``."""
    return name.isascii() and name.isdigit() and not name.startswith("0")


def apply_version_policy(policy: VersionPolicy, available: list[int]) -> list[int]:
    """Versions Triton would serve out of ``available`` under ``policy`` (ascending)."""
    versions = sorted(available)
    if policy.kind == "all":
        return versions
    if policy.kind == "specific":
        wanted = set(policy.versions)
        return [v for v in versions if v in wanted]
    return versions[-policy.num_versions :] if versions else []


class Repository:
    """A model repository rooted at ``root`` (which may not exist yet: writers create it)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise RepositoryError(
                f"model repository {self.root} is a file, not a directory; "
                "point --repository at the folder that holds the model folders"
            )

    def __repr__(self) -> str:
        return f"Repository({str(self.root)!r})"

    @property
    def exists(self) -> bool:
        """Whether the repository folder exists."""
        return self.root.is_dir()

    def require(self) -> Repository:
        """Raise :class:`RepositoryError` unless the repository folder exists; returns self."""
        if not self.exists:
            raise RepositoryError(f"model repository {self.root} does not exist")
        return self

    def models(self) -> list[str]:
        """Model folder names, sorted: folders holding config.pbtxt or a version folder."""
        if not self.exists:
            return []
        names = []
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            if (entry / CONFIG_NAME).is_file() or any(
                is_version_name(sub.name) and sub.is_dir() for sub in entry.iterdir()
            ):
                names.append(entry.name)
        return sorted(names)

    def model_dir(self, model: str) -> Path:
        """Path of a model's folder (not checked for existence)."""
        if not model or model in (".", "..") or "/" in model or "\\" in model or "\0" in model:
            raise InvalidArgumentError(
                f"invalid model name {model!r}: must be a single folder name, not a path"
            )
        return self.root / model

    def has_model(self, model: str) -> bool:
        """Whether ``model`` has a folder in the repository."""
        return self.model_dir(model).is_dir()

    def _existing_model_dir(self, model: str) -> Path:
        path = self.model_dir(model)
        if not path.is_dir():
            raise NotFoundError(f"model {model!r} is not in repository {self.root}")
        return path

    def versions(self, model: str) -> list[int]:
        """Version numbers present on disk for ``model``, ascending."""
        path = self._existing_model_dir(model)
        return sorted(
            int(sub.name) for sub in path.iterdir() if is_version_name(sub.name) and sub.is_dir()
        )

    def version_dir(self, model: str, version: int) -> Path:
        """Path of one version folder (not checked for existence)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidArgumentError(
                f"version {version!r} of model {model!r}: must be a positive integer"
            )
        return self.model_dir(model) / str(version)

    def spec(self, model: str) -> ModelSpec:
        """The model's parsed config.pbtxt."""
        return read_config(self._existing_model_dir(model))

    def sidecar(self, model: str, version: int) -> Provenance | None:
        """The version's provenance sidecar, or None when it has none."""
        return read_sidecar(self.version_dir(model, version))

    def next_version(self, model: str) -> int:
        """The number a new version of ``model`` gets: highest existing + 1, or 1."""
        if not self.has_model(model):
            return 1
        return max(self.versions(model), default=0) + 1

    def served_versions(self, model: str, spec: ModelSpec | None = None) -> list[int]:
        """Versions Triton would load for ``model`` under its version_policy."""
        spec = spec if spec is not None else self.spec(model)
        return apply_version_policy(spec.version_policy, self.versions(model))
