"""Triton's system shared-memory extension: clients pass tensors by region, not by value.

A client creates a POSIX shared-memory object (``/dev/shm/<key>``), registers a region
of it under a name, and then names the region, offset and size instead of sending the
bytes. ``tritonclient.utils.shared_memory`` works unchanged against this.

Inputs are never copied by the ingress: a request carries a
:class:`~rayfront.tensors.FileTensor`, which travels to the replica as a file reference,
and the replica reads it with ``pread`` straight into the batch buffer. ``pread`` (never
``mmap``) is what makes a client that truncates or unlinks its region mid-flight fail
that request cleanly instead of crashing the process with SIGBUS. Outputs are written
into the client's region with ``pwrite``, bounded by the registered size.

Several ingress processes on one host share the port, so a region registered through
one of them must be usable through every one: registrations live as small files in a
private (0700) directory of this server, which each process reads on a miss and checks
(one ``stat``) on every use, so an unregister anywhere takes effect everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayfront import tensors
from rayfront.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from rayfront.tensors import FileRef, FileTensor

SHM_ROOT = "/dev/shm"
#: Triton reserves keys with this prefix for its Python backend's own regions.
RESERVED_PREFIX = "triton_python_backend_shm_region"
_KEY = re.compile(r"^/?([A-Za-z0-9_.\-]{1,200})$")
#: Region names are free text to Triton; any printable name up to this length is accepted.
MAX_NAME = 256


@dataclass(frozen=True, slots=True)
class Region:
    """One registered region: ``byte_size`` bytes at ``offset`` of ``/dev/shm/<key>``."""

    name: str
    key: str
    offset: int
    byte_size: int
    dev: int
    ino: int

    @property
    def path(self) -> str:
        return os.path.join(SHM_ROOT, self.key.lstrip("/"))

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidArgumentError(
            f"shared memory region name {name!r} must be printable text of 1 to {MAX_NAME} "
            "characters"
        )
    return name


def _check_int(value: Any, what: str, region: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 1 << 63:
        raise InvalidArgumentError(
            f"shared memory region '{region}': {what} must be a non-negative integer, got {value!r}"
        )
    return value


def check_key(key: Any, region: str) -> str:
    """A POSIX shared-memory key naming one object directly under /dev/shm."""
    match = _KEY.match(key) if isinstance(key, str) else None
    if match is None or match.group(1) in (".", ".."):
        raise InvalidArgumentError(
            f"shared memory region '{region}': key {key!r} must name one object under "
            f"{SHM_ROOT} (letters, digits, '_', '.', '-', an optional leading '/')"
        )
    if match.group(1).startswith(RESERVED_PREFIX):
        raise InvalidArgumentError(
            f"shared memory region '{region}': keys starting with {RESERVED_PREFIX!r} are reserved"
        )
    return key


class SharedMemoryRegistry:
    """The system shared-memory regions of one server on one host.

    ``state_dir`` is shared by the server's ingress processes on this host; it is created
    private (0700) and refused if it exists with another owner or wider permissions.
    """

    def __init__(self, state_dir: Path) -> None:
        self._dir = Path(state_dir)
        _private_dir(self._dir)
        self._lock = threading.Lock()
        # name -> (registration file's (mtime_ns, inode), region, open file)
        self._cache: dict[str, tuple[tuple[int, int], Region, FileRef]] = {}

    def _file(self, name: str) -> Path:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self._dir / f"{digest}.json"

    # --- the extension's three calls ------------------------------------------------

    def register(self, name: str, key: str, offset: int, byte_size: int) -> Region:
        name = _check_name(name)
        check_key(key, name)
        offset = _check_int(offset, "offset", name)
        byte_size = _check_int(byte_size, "byte_size", name)
        ref, st = self._open(key, name)
        if offset + byte_size > st.st_size:
            raise InvalidArgumentError(
                f"failed to register shared memory region '{name}': offset {offset} + "
                f"byte_size {byte_size} runs past the end of {key!r} ({st.st_size} bytes)"
            )
        region = Region(name, key, offset, byte_size, st.st_dev, st.st_ino)
        path = self._file(name)
        doc = json.dumps({**region.status(), "dev": region.dev, "ino": region.ino}).encode()
        with self._lock:
            try:
                # O_EXCL: two processes registering one name cannot both win.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise AlreadyExistsError(
                    f"shared memory region '{name}' already in manager"
                ) from None
            with os.fdopen(fd, "wb") as f:
                f.write(doc)
            pst = os.stat(path)
            self._cache[name] = ((pst.st_mtime_ns, pst.st_ino), region, ref)
        return region

    def unregister(self, name: str | None = None) -> None:
        """Forget one region, or all; requests already holding it still finish."""
        with self._lock:
            if name is None:
                for path in self._dir.glob("*.json"):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                self._cache.clear()
                return
            with contextlib.suppress(FileNotFoundError):
                self._file(_check_name(name)).unlink()
            self._cache.pop(name, None)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        if name is not None:
            region, _ = self._get(_check_name(name), not_found=NotFoundError)
            return [region.status()]
        out = []
        for path in sorted(self._dir.glob("*.json")):
            try:
                out.append(_read_status(path))
            except (FileNotFoundError, ValueError):
                continue  # unregistered while listing, or a torn file
        return sorted(out, key=lambda s: s["name"])

    # --- use by inference -----------------------------------------------------------

    def input_tensor(
        self,
        name: str,
        offset: int,
        byte_size: int,
        datatype: str,
        shape: tuple[int, ...],
        *,
        tensor: str,
        model: str,
    ) -> FileTensor:
        """The input ``tensor`` of ``model``, read later from the region (never copied here)."""
        region, ref = self._bounds(name, offset, byte_size, tensor=tensor, model=model)
        if datatype == "BYTES":
            raise InvalidArgumentError(
                f"input '{tensor}' of model '{model}': BYTES tensors cannot come from shared "
                "memory here; send them in the request"
            )
        dtype = tensors.to_wire_dtype(datatype)
        expected = tensors.element_count(shape) * dtype.itemsize
        if byte_size != expected:
            raise InvalidArgumentError(
                f"input '{tensor}' of model '{model}': shared_memory_byte_size {byte_size} "
                f"in region '{name}' does not match {datatype}{list(shape)} ({expected} bytes)"
            )
        return FileTensor(
            ref,
            region.offset + offset,
            dtype,
            shape,
            path=region.path,
            dev=region.dev,
            ino=region.ino,
        )

    def check_output(
        self, name: str, offset: int, byte_size: int, *, tensor: str, model: str
    ) -> None:
        """Validate an output's region before the request runs."""
        self._bounds(name, offset, byte_size, tensor=tensor, model=model, role="output")

    def write_output(
        self, name: str, offset: int, byte_size: int, arr: np.ndarray, *, tensor: str, model: str
    ) -> int:
        """Write ``arr`` into the region; returns the bytes written."""
        region, _ = self._bounds(name, offset, byte_size, tensor=tensor, model=model, role="output")
        raw = memoryview(tensors.tensor_to_raw(arr)).cast("B")
        if len(raw) > byte_size:
            raise InvalidArgumentError(
                f"output '{tensor}' of model '{model}': {len(raw)} bytes do not fit the "
                f"{byte_size} bytes given in shared memory region '{name}'"
            )
        try:
            fd = os.open(region.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise InvalidArgumentError(
                f"output '{tensor}' of model '{model}': shared memory region '{name}' "
                f"cannot be written: {exc.strerror}"
            ) from None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (region.dev, region.ino):
                raise InvalidArgumentError(
                    f"output '{tensor}' of model '{model}': shared memory region '{name}' "
                    "was replaced since it was registered; register it again"
                )
            if st.st_size < region.offset + offset + len(raw):
                raise InvalidArgumentError(
                    f"output '{tensor}' of model '{model}': shared memory region '{name}' "
                    "shrank since it was registered"
                )
            done = 0
            while done < len(raw):
                done += os.pwrite(fd, raw[done:], region.offset + offset + done)
        finally:
            os.close(fd)
        return len(raw)

    # --- internals ------------------------------------------------------------------

    def _open(self, key: str, name: str) -> tuple[FileRef, os.stat_result]:
        path = os.path.join(SHM_ROOT, key.lstrip("/"))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise InvalidArgumentError(
                f"failed to register shared memory region '{name}': unable to open shared "
                f"memory region {key!r}: {exc.strerror}"
            ) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise InvalidArgumentError(
                f"failed to register shared memory region '{name}': {key!r} is not a "
                "shared-memory object"
            )
        return FileRef(fd, path), st

    def _get(
        self, name: str, *, not_found: type[Exception] = InvalidArgumentError
    ) -> tuple[Region, FileRef]:
        path = self._file(name)
        try:
            pst = os.stat(path)
        except FileNotFoundError:
            self._cache.pop(name, None)
            raise not_found(f"Unable to find system shared memory region: '{name}'") from None
        stamp = (pst.st_mtime_ns, pst.st_ino)
        hit = self._cache.get(name)
        if hit is not None and hit[0] == stamp:
            return hit[1], hit[2]
        # Registered (again) by another ingress process on this host.
        try:
            doc = _read_status(path, full=True)
        except (FileNotFoundError, ValueError):
            raise not_found(f"Unable to find system shared memory region: '{name}'") from None
        region = Region(
            doc["name"], doc["key"], doc["offset"], doc["byte_size"], doc["dev"], doc["ino"]
        )
        ref, st = self._open(region.key, name)
        if (st.st_dev, st.st_ino) != (region.dev, region.ino):
            raise InvalidArgumentError(
                f"shared memory region '{name}': {region.key!r} was replaced since it was "
                "registered; register it again"
            )
        self._cache[name] = (stamp, region, ref)
        return region, ref

    def _bounds(
        self,
        name: Any,
        offset: Any,
        byte_size: Any,
        *,
        tensor: str,
        model: str,
        role: str = "input",
    ) -> tuple[Region, FileRef]:
        where = f"{role} '{tensor}' of model '{model}'"
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"{where}: shared_memory_region must be a region name")
        offset = _check_int(offset, "shared_memory_offset", name)
        byte_size = _check_int(byte_size, "shared_memory_byte_size", name)
        region, ref = self._get(name)
        if offset + byte_size > region.byte_size:
            raise InvalidArgumentError(
                f"{where}: Invalid offset + byte size for shared memory region: '{name}' "
                f"(offset {offset} + {byte_size} bytes > the region's {region.byte_size})"
            )
        return region, ref


def _read_status(path: Path, *, full: bool = False) -> dict[str, Any]:
    doc = json.loads(path.read_bytes())
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    keys = (
        ("name", "key", "offset", "byte_size", "dev", "ino")
        if full
        else ("name", "key", "offset", "byte_size")
    )
    return {k: doc[k] for k in keys}


def _private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, or check an existing one is ours and private."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=False)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise InvalidArgumentError(
            f"shared memory registry directory {path} exists but is not a private (0700) "
            "directory of this user; remove it or choose another"
        )


#: Request/output parameters of the extension.
PARAM_REGION = "shared_memory_region"
PARAM_BYTE_SIZE = "shared_memory_byte_size"
PARAM_OFFSET = "shared_memory_offset"
SHM_PARAMS = (PARAM_REGION, PARAM_BYTE_SIZE, PARAM_OFFSET)


def wants_shm(params: Any) -> bool:
    return any(k in params for k in SHM_PARAMS)


def region_args(params: Any, *, role: str, tensor: str, model: str) -> tuple[str, int, int]:
    """(region, offset, byte_size) from a tensor's parameters, checked for presence."""
    where = f"{role} '{tensor}' of model '{model}'"
    if PARAM_REGION not in params or PARAM_BYTE_SIZE not in params:
        raise InvalidArgumentError(
            f"{where}: shared memory needs both {PARAM_REGION} and {PARAM_BYTE_SIZE}"
        )
    return params[PARAM_REGION], params.get(PARAM_OFFSET, 0), params[PARAM_BYTE_SIZE]


def disabled(role: str, tensor: str, model: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{role} '{tensor}' of model '{model}': system shared memory is not enabled on this "
        "server (or not for clients on another host); send the tensor in the request"
    )
