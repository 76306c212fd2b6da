"""Crash-safe file-system primitives shared by the repository writer, the sidecar and canary state.

Every write that other processes may read (config.pbtxt, rayfront.json, rollout state) goes
through a temp file in the same directory, fsync, then ``os.replace``: a reader sees the old
bytes or the new bytes, never a torn file, even if the writer is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_DEFAULT_FILE_MODE = 0o644


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename or a new file in it) to disk.

    Without this a power loss after ``os.rename`` may forget the rename even though the
    file data reached disk. Some file systems refuse to open directories; that is not an
    error worth failing a write for, the rename itself already happened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same dir, fsync, os.replace).

    The temp file is removed on any failure, including KeyboardInterrupt. An existing file
    keeps its permission bits; a new one gets 0644 (``mkstemp`` would leave 0600, which
    hides configs from a Triton server running as another user).
    """
    path = Path(path)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            f"atomic_write_bytes({path}): data must be bytes, got {type(data).__name__}"
        )
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = _DEFAULT_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_file_hashed(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` (new file), fsync it, and return the sha256 of what was written.

    Hashing while copying reads the (possibly multi-GB) source once instead of twice. The
    copy is 0644 whatever the source's mode: exporters write sources with ``mkstemp`` (0600),
    which would hide the model from a Triton server running as another user.
    """
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    os.chmod(dst, _DEFAULT_FILE_MODE)
    return digest.hexdigest()
