"""Atomic publishing of new model versions into a repository.

A version is assembled completely in a staging folder NEXT TO the repository (same file
system, outside the tree Triton or rayfront polls), then published with a single
``os.rename``: the whole model folder for a new model, the version folder for an existing
one. Until that rename the repository is untouched, so an exception or a SIGKILL at any
point before it leaves the repository byte-for-byte as it was; after it, the version is
complete. Concurrent writers cannot collide on a version number: renaming a folder onto an
existing non-empty folder fails, and the loser retries with the next number.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from rayfront.errors import RepositoryError, SignatureMismatchError
from rayfront.repository._fs import (
    atomic_write_bytes,
    atomic_write_text,
    copy_file_hashed,
    fsync_dir,
)
from rayfront.repository.layout import Repository
from rayfront.repository.pbtxt import CONFIG_NAME, read_config, render_config
from rayfront.repository.sidecar import SIDECAR_NAME, Provenance, write_sidecar
from rayfront.spec import ModelSpec, TensorSpec

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "signature_differences",
    "staging_prefix",
    "write_model_file_atomic",
    "write_version",
]

logger = logging.getLogger(__name__)

# Renaming onto an existing, non-empty folder fails with one of these (Linux: ENOTEMPTY).
_TAKEN = {errno.EEXIST, errno.ENOTEMPTY}
_MAX_ATTEMPTS = 1000
# Staging folders of writers killed mid-export are swept after this long. A day is far
# beyond any export, so a live writer's staging folder is never touched.
_STALE_STAGING_S = 24 * 3600

write_model_file_atomic = atomic_write_bytes
"""Alias: replace a file atomically (temp file in the same folder, fsync, os.replace)."""


def staging_prefix(root: Path) -> str:
    """Name prefix of the staging folders created beside ``root``."""
    return f".{Path(root).name}.staging-"


# --- signature comparison ----------------------------------------------------------------


def _dims(dims: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _tensor_differences(
    kind: str, model: str, old: tuple[TensorSpec, ...], new: tuple[TensorSpec, ...]
) -> list[str]:
    diffs = []
    new_by_name = {t.name: t for t in new}
    old_names = {t.name for t in old}
    for o in old:
        n = new_by_name.get(o.name)
        if n is None:
            diffs.append(f"{kind} {o.name!r} missing from the new version of model {model!r}")
            continue
        if o.datatype != n.datatype:
            diffs.append(
                f"{kind} {o.name!r} of model {model!r}: existing dtype {o.datatype}, "
                f"new {n.datatype}"
            )
        if o.dims != n.dims:
            diffs.append(
                f"{kind} {o.name!r} of model {model!r}: existing dims {_dims(o.dims)}, "
                f"new {_dims(n.dims)}"
            )
    diffs.extend(
        f"{kind} {t.name!r} added by the new version of model {model!r}"
        for t in new
        if t.name not in old_names
    )
    return diffs


def signature_differences(existing: ModelSpec, new: ModelSpec) -> list[str]:
    """Human-readable differences between two specs' signatures; empty when compatible.

    Tensors are matched by name (their order in config.pbtxt means nothing to clients).
    Turning batching on or off also counts: it adds or removes the leading batch dim of
    every tensor, so clients of the old versions would send the wrong shapes.
    """
    model = existing.name
    diffs = _tensor_differences("input", model, existing.inputs, new.inputs)
    diffs += _tensor_differences("output", model, existing.outputs, new.outputs)
    if (existing.max_batch_size > 0) != (new.max_batch_size > 0):

        def describe(mbs: int) -> str:
            return f"{mbs} (batch dim first)" if mbs > 0 else "0 (no batch dim)"

        diffs.append(
            f"model {model!r}: existing max_batch_size {describe(existing.max_batch_size)}, "
            f"new {describe(new.max_batch_size)}"
        )
    return diffs


def _check_compatible(existing: ModelSpec, new: ModelSpec, model_dir: Path) -> None:
    diffs = signature_differences(existing, new)
    if diffs:
        raise SignatureMismatchError(
            f"new version of model {existing.name!r} does not match the signature in "
            f"{model_dir / CONFIG_NAME}: " + "; ".join(diffs) + ". Export it under a new "
            "model name, or remove the old model first."
        )
    if (existing.platform, existing.backend) != (new.platform, new.backend):
        # One config serves every version, so switching platform would make the existing
        # versions unloadable.
        raise RepositoryError(
            f"model {existing.name!r} in {model_dir} is platform {existing.platform!r}, the new "
            f"version is {new.platform!r}; all versions of a model share one platform, so write "
            f"it under another model name (e.g. '{existing.name}_{new.platform.split('_')[0]}')"
        )
    if existing.model_filename != new.model_filename:
        raise RepositoryError(
            f"model {existing.name!r} in {model_dir} loads {existing.model_filename!r} from each "
            f"version, the new version names {new.model_filename!r}; they must agree"
        )


# --- argument checks ---------------------------------------------------------------------


def _check_files(spec: ModelSpec, files: Mapping[str, Path]) -> dict[str, Path]:
    if not isinstance(files, Mapping):
        raise TypeError(
            f"files must be a mapping of name -> source path, got {type(files).__name__}"
        )
    checked: dict[str, Path] = {}
    for name, src in files.items():
        rel = PurePosixPath(name)
        if (
            not name
            or rel.is_absolute()
            or ".." in rel.parts
            or "\\" in name
            or rel.name.startswith(".")
        ):
            raise ValueError(
                f"file name {name!r} for model {spec.name!r}: must be a relative path inside the "
                "version folder without '..' or a hidden name, e.g. 'model.onnx'"
            )
        if str(rel) in (SIDECAR_NAME, CONFIG_NAME):
            raise ValueError(
                f"file name {name!r} for model {spec.name!r} is reserved; the writer creates it"
            )
        src_path = Path(src)
        if not src_path.is_file():
            raise RepositoryError(
                f"source file {src_path} for {name!r} of model {spec.name!r} does not exist "
                "or is not a regular file"
            )
        checked[str(rel)] = src_path
    if spec.model_filename not in checked:
        raise ValueError(
            f"files for model {spec.name!r} lack {spec.model_filename!r}, the file its "
            f"{spec.platform} config loads; got {sorted(checked)}"
        )
    return checked


def _existing_spec(model_dir: Path) -> ModelSpec | None:
    if not model_dir.exists():
        return None
    if not model_dir.is_dir():
        raise RepositoryError(f"{model_dir} is a file; a model needs a folder of that name")
    if not (model_dir / CONFIG_NAME).exists():
        return None
    return read_config(model_dir)


# --- staging -----------------------------------------------------------------------------


def _sweep_stale_staging(root: Path) -> None:
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in root.parent.iterdir():
            if not entry.name.startswith(staging_prefix(root)):
                continue
            with contextlib.suppress(OSError):
                if now - entry.lstat().st_mtime > _STALE_STAGING_S:
                    logger.info("removing stale staging folder %s of a killed writer", entry)
                    shutil.rmtree(entry, ignore_errors=True)


def _make_staging(root: Path) -> Path:
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=staging_prefix(root)))
    except OSError as err:
        raise RepositoryError(
            f"cannot create a staging folder beside model repository {root} (in {root.parent}): "
            f"{err}; the writer stages there so a failed write never touches the repository"
        ) from None
    # mkdtemp makes 0700; if this folder becomes the repository root, Triton must read it.
    os.chmod(staging, 0o755)
    return staging


def _stage(
    staging: Path, spec: ModelSpec, files: dict[str, Path], provenance: Provenance, version: int
) -> tuple[Path, Path]:
    """Build ``staging/<model>/{config.pbtxt,<version>/...}``; returns (model, version) dirs."""
    staged_model = staging / spec.name
    staged_version = staged_model / str(version)
    staged_version.mkdir(parents=True)
    hashes: dict[str, str] = {}
    for name, src in files.items():
        dst = staged_version / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        logger.info("copying %s -> %s/%s", src, spec.name, name)
        hashes[name] = copy_file_hashed(src, dst)
    # The writer is the one that knows what was actually written, so its hashes win.
    prov = provenance.model_copy(update={"files": {**provenance.files, **hashes}})
    write_sidecar(staged_version, prov)
    atomic_write_text(staged_model / CONFIG_NAME, render_config(spec))
    for d in (*[p for p in staged_version.rglob("*") if p.is_dir()], staged_version, staged_model):
        fsync_dir(d)
    return staged_model, staged_version


# --- publishing --------------------------------------------------------------------------


def _rename(src: Path, dst: Path) -> bool:
    """``os.rename`` that returns False when ``dst`` is already taken (another writer won)."""
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno in _TAKEN:
            return False
        raise RepositoryError(f"cannot publish {src} as {dst}: {err}") from None
    fsync_dir(dst.parent)
    return True


def _update_config(model_dir: Path, spec: ModelSpec, existing: ModelSpec | None) -> None:
    if existing == spec:
        return  # keeps a hand-written config's formatting and comments
    atomic_write_text(model_dir / CONFIG_NAME, render_config(spec))
    logger.info("updated %s", model_dir / CONFIG_NAME)


def _publish(
    root: Path,
    spec: ModelSpec,
    staging: Path,
    staged_model: Path,
    staged_version: Path,
    version: int | None,
) -> Path:
    """Move the staged version into the repository; returns the published version dir."""
    repo = Repository(root)
    model_dir = repo.model_dir(spec.name)
    number = int(staged_version.name)
    for _ in range(_MAX_ATTEMPTS):
        if not root.exists():
            # A brand-new repository appears in one rename, so it is never seen half-made.
            if _rename(staging, root):
                return model_dir / str(number)
            continue  # someone created the repository meanwhile
        if not model_dir.exists():
            if _rename(staged_model, model_dir):
                return model_dir / str(number)
            continue  # another writer created the model meanwhile
        existing = _existing_spec(model_dir)
        if existing is not None:
            _check_compatible(existing, spec, model_dir)
        if version is None:
            number = max(number, repo.next_version(spec.name))
        target = model_dir / str(number)
        if not _rename(staged_version, target):
            if version is not None:
                raise RepositoryError(f"version {version} of model {spec.name!r} already exists")
            number += 1
            continue
        try:
            _update_config(model_dir, spec, existing)
        except BaseException:
            # Take the version back out so the repository is as it was before this call.
            with contextlib.suppress(OSError):
                os.rename(target, staged_version)
                fsync_dir(model_dir)
            raise
        return target
    raise RepositoryError(
        f"could not find a free version number for model {spec.name!r} after "
        f"{_MAX_ATTEMPTS} attempts; is another process writing it in a loop?"
    )


def write_version(
    root: Path,
    spec: ModelSpec,
    files: Mapping[str, Path],
    provenance: Provenance,
    *,
    version: int | None = None,
) -> Path:
    """Publish a new version of ``spec.name`` into the repository at ``root``, atomically.

    ``files`` maps names inside the version folder to source paths, e.g.
    ``{"model.onnx": tmp / "x.onnx"}``; it must contain the config's model file. The
    sidecar gets the sha256 of every copied file. ``version=None`` takes the next free
    number (1 for a new model). For an existing model the signature must match
    (:class:`SignatureMismatchError` otherwise); other config changes rewrite config.pbtxt
    after the version is published. Returns the new version folder.
    """
    root = Path(root)
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    if not isinstance(provenance, Provenance):
        raise TypeError(f"provenance must be a Provenance, got {type(provenance).__name__}")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise ValueError(f"version {version!r} of model {spec.name!r}: must be a positive integer")
    repo = Repository(root)
    model_dir = repo.model_dir(spec.name)
    checked = _check_files(spec, files)

    # Fail before copying gigabytes when the answer is already known; _publish re-checks
    # because another writer may create the model in between.
    existing = _existing_spec(model_dir)
    if existing is not None:
        _check_compatible(existing, spec, model_dir)
    if version is not None and (model_dir / str(version)).exists():
        raise RepositoryError(
            f"version {version} of model {spec.name!r} already exists in {model_dir}"
        )

    _sweep_stale_staging(root)
    staging = _make_staging(root)
    try:
        first = version if version is not None else repo.next_version(spec.name)
        staged_model, staged_version = _stage(staging, spec, checked, provenance, first)
        published = _publish(root, spec, staging, staged_model, staged_version, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("published model %r version %s at %s", spec.name, published.name, published)
    return published
