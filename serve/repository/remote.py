"""Model repositories on object storage (``s3://``, ``gs://``, ``file://``, any fsspec URL).

:func:`pull` brings a remote repository into a local directory that the server serves,
atomically at the granularity a reader can see:

* a version folder is downloaded into a staging folder beside its final place, then renamed
  into place in one step, so a server scanning the repository never sees half a version;
* ``config.pbtxt`` (and any other file at the model's top level) is replaced with
  :func:`~rayfront.repository._fs.atomic_write_bytes`;
* a version whose files (names, sizes, and etag or mtime) match the last pull is skipped,
  recorded in ``.rayfront-pull.json`` inside each version folder;
* files the server writes locally (``rollout.json``: canary state) are left alone.

A failed pull leaves every version folder as it was (the staging folder is removed).
Pulling again picks up new versions and changed configs; remove a version remotely and it
stays locally until you remove it (a serving version is never deleted under a server).
fsspec implementations other than the local file system need their package (``s3fs``,
``gcsfs``) installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from rayfront.errors import RepositoryError
from rayfront.repository._fs import atomic_write_bytes, fsync_dir

logger = logging.getLogger(__name__)

STAMP = ".rayfront-pull.json"
#: Local files the server owns; a pull never overwrites them.
LOCAL_ONLY = frozenset({"rollout.json"})


def is_remote(ref: str | Path) -> bool:
    """Whether ``ref`` names a repository by URL rather than a local path."""
    return "://" in str(ref)


def cache_dir_for(url: str, cache_root: Path) -> Path:
    """The local folder a URL is pulled into (stable per URL)."""
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return Path(cache_root) / digest


def _fingerprint(entries: list[tuple[str, dict[str, Any]]]) -> str:
    parts = [
        f"{rel}|{info.get('size')}|{info.get('ETag') or info.get('etag') or info.get('mtime')}"
        for rel, info in sorted(entries)
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def pull(url: str, local: Path) -> dict[str, list[str]]:
    """Bring ``url`` into ``local``; returns ``{"updated": [...], "unchanged": [...]}`` of
    ``model/version`` and ``model/config`` entries."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with ray
        raise RepositoryError("remote repositories need fsspec (pip install fsspec)") from None
    try:
        fs, root = fsspec.core.url_to_fs(url)
        listing = fs.find(root, detail=True)
    except (OSError, ValueError, ImportError) as exc:
        raise RepositoryError(f"cannot list repository {url}: {exc}") from None
    if not listing:
        raise RepositoryError(f"repository {url} is empty or does not exist")
    base = PurePosixPath(root)
    by_version: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    top_files: list[tuple[str, str, dict[str, Any]]] = []
    for path, info in listing.items():
        rel = PurePosixPath(path).relative_to(base)
        parts = rel.parts
        if len(parts) < 2 or info.get("type") == "directory":
            continue  # files at the repository root are not models
        model = parts[0]
        if len(parts) == 2:
            if parts[1] not in LOCAL_ONLY:
                top_files.append((model, parts[1], info | {"name": path}))
            continue
        by_version.setdefault((model, parts[1]), []).append(
            (str(PurePosixPath(*parts[2:])), info | {"name": path})
        )
    local = Path(local)
    local.mkdir(parents=True, exist_ok=True)
    report: dict[str, list[str]] = {"updated": [], "unchanged": []}
    for model, name, info in sorted(top_files):
        dest = local / model / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = fs.cat_file(info["name"])
        if dest.exists() and dest.read_bytes() == data:
            report["unchanged"].append(f"{model}/{name}")
            continue
        atomic_write_bytes(dest, data)
        report["updated"].append(f"{model}/{name}")
    for (model, version), files in sorted(by_version.items()):
        key = f"{model}/{version}"
        target = local / model / version
        fingerprint = _fingerprint(files)
        if _stamp(target) == fingerprint:
            report["unchanged"].append(key)
            continue
        _pull_version(fs, files, target, fingerprint)
        report["updated"].append(key)
    logger.info(
        "pulled %s into %s: %d updated, %d unchanged",
        url,
        local,
        len(report["updated"]),
        len(report["unchanged"]),
    )
    return report


def _stamp(version_dir: Path) -> str | None:
    try:
        return json.loads((version_dir / STAMP).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def _pull_version(
    fs: Any, files: list[tuple[str, dict[str, Any]]], target: Path, fingerprint: str
) -> None:
    staging = target.parent / f".{target.name}.pull-{uuid.uuid4().hex[:8]}"
    try:
        for rel, info in files:
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(info["name"], str(dest))
        (staging / STAMP).write_text(json.dumps({"fingerprint": fingerprint}))
        if target.exists():
            # Replace a changed version: move the old one aside first, so the swap is two
            # renames and the folder is never missing for long nor ever half-written.
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
