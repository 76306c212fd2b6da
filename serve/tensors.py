"""Wire <-> numpy tensor conversion: the one place it happens, shared by HTTP and gRPC.

Binary layout is Triton's: numeric tensors are raw little-endian, row-major; BYTES tensors
are each element's 4-byte little-endian length followed by its bytes, in row-major order.
JSON tensors are flat (or nested) lists; BYTES elements are UTF-8 strings.

Decoding never copies numeric binary data: :func:`tensor_from_raw` is ``np.frombuffer`` on
the caller's buffer, so the returned array is read-only and keeps the body alive. A
:class:`FileTensor` stands for bytes still in a file region (a client's shared-memory
region): it is read once, with ``pread``, straight into wherever the batch is collated.

Shapes are checked with Python integers before anything is allocated: rank at most
:data:`MAX_RANK`, and element counts that the bytes at hand could actually hold.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from rayfront.dtypes import check_datatype, from_numpy, to_numpy
from rayfront.errors import InvalidArgumentError

Buffer = bytes | bytearray | memoryview
#: numpy's own limit; a deeper shape is a client error, never a server fault.
MAX_RANK = 64
#: Most elements one BYTES tensor may have. Each is a Python object, decoded one by one:
#: a 62 KB gzip body could otherwise expand into 16 M zero-length strings and seconds of
#: CPU. A million strings is far beyond any text batch.
MAX_BYTES_ELEMENTS = 1 << 20

_LITTLE = np.little_endian

_LEN = struct.Struct("<I")
# Little-endian numpy dtype per KServe numeric datatype: the wire is little-endian whatever
# the host is, so never use the native dtype to interpret a buffer.
_WIRE_DTYPES: dict[str, np.dtype] = {
    name: to_numpy(name).newbyteorder("<")
    for name in (
        *("BOOL", "UINT8", "UINT16", "UINT32", "UINT64"),
        *("INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"),
    )
}


class FileRef:
    """An open file descriptor, closed when the last tensor or region using it goes.

    Reference counting (not an explicit close) keeps a descriptor valid for requests still
    in flight when their region is unregistered, so a recycled descriptor number can never
    make a request read somebody else's file.
    """

    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class FileTensor:
    """A tensor whose bytes are in a file at ``offset``; read on demand with ``pread``.

    ``pread`` returns short where a ``mmap`` would raise SIGBUS, so a region truncated by
    its owner mid-flight fails this request cleanly instead of killing the process.
    """

    __slots__ = ("dev", "dtype", "file", "ino", "offset", "shape")

    def __init__(
        self,
        file: FileRef | int,
        offset: int,
        dtype: np.dtype,
        shape: tuple[int, ...],
        *,
        path: str = "",
        dev: int = 0,
        ino: int = 0,
    ) -> None:
        self.file = file if isinstance(file, FileRef) else FileRef(os.dup(file), path)
        self.offset = offset
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.dev = dev
        self.ino = ino

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def reference(self) -> list[object]:
        """Where the bytes are, for a reader on the same host (the transport's ``where``)."""
        return ["f", self.file.path, self.offset, self.dev, self.ino]

    def read_into(self, dst: np.ndarray | memoryview) -> None:
        """Copy the bytes into ``dst`` (a C-contiguous buffer of exactly ``nbytes``)."""
        view = memoryview(dst).cast("B")
        if len(view) != self.nbytes:
            raise ValueError(f"destination holds {len(view)} bytes, tensor has {self.nbytes}")
        done = 0
        while done < len(view):
            n = os.preadv(self.file.fd, [view[done:]], self.offset + done)
            if n <= 0:
                raise InvalidArgumentError(
                    f"shared memory {self.file.path!r}: only {done} of {self.nbytes} bytes at "
                    f"offset {self.offset} could be read; the region shrank or was removed"
                )
            done += n

    def numpy(self) -> np.ndarray:
        """The tensor as a new native-order array."""
        arr = np.empty(self.shape, dtype=self.dtype)
        self.read_into(arr)
        return arr if self.dtype.isnative else arr.astype(self.dtype.newbyteorder("="))


Tensor = np.ndarray | FileTensor
#: Tensors by name: the one shape every layer passes around (wire, batcher, runtimes).
TensorDict = dict[str, Tensor]


def as_array(value: Tensor) -> np.ndarray:
    """``value`` as an ndarray (a file tensor is read)."""
    return value.numpy() if isinstance(value, FileTensor) else value


def to_wire_dtype(datatype: str) -> np.dtype:
    """The little-endian numpy dtype of a numeric KServe datatype (the wire's byte order)."""
    try:
        return _WIRE_DTYPES[datatype]
    except KeyError:
        raise InvalidArgumentError(f"datatype {datatype!r} has no fixed-size wire form") from None


def _where(name: str, model: str) -> str:
    return f"input '{name}' of model '{model}'" if model else f"input '{name}'"


def _fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def check_datatype_for(datatype: Any, *, name: str, model: str) -> str:
    """``datatype`` upper-cased if it is a KServe v2 name, else an error naming the input."""
    if not isinstance(datatype, str):
        raise InvalidArgumentError(
            f"{_where(name, model)}: datatype must be a string, got {datatype!r}"
        )
    try:
        return check_datatype(datatype)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{_where(name, model)}: {exc.message}") from None


def check_shape(shape: Any, *, name: str, model: str) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints, or InvalidArgumentError naming the input."""
    # Accepts lists, tuples and protobuf repeated fields; a string is iterable but never a shape.
    try:
        if isinstance(shape, str | bytes):
            raise TypeError
        dims = list(shape)
    except TypeError:
        raise InvalidArgumentError(
            f"{_where(name, model)}: shape must be a list of integers, got {shape!r}"
        ) from None
    if len(dims) > MAX_RANK:
        raise InvalidArgumentError(
            f"{_where(name, model)}: shape has {len(dims)} dimensions; at most {MAX_RANK} "
            "are supported"
        )
    out = []
    for d in dims:
        # bool is an int subclass; a JSON `true` in a shape is a client bug, not dim 1.
        if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0:
            raise InvalidArgumentError(
                f"{_where(name, model)}: shape must be a list of non-negative integers, "
                f"got {_fmt_shape(dims[:8])}{'...' if len(dims) > 8 else ''}"
            )
        out.append(int(d))
    return tuple(out)


def element_count(shape: Sequence[int]) -> int:
    """Number of elements of a tensor with ``shape`` (1 for a scalar)."""
    return math.prod(shape)


def check_bytes_count(count: int, *, name: str, model: str) -> None:
    """Refuse a BYTES tensor of more than :data:`MAX_BYTES_ELEMENTS` before decoding it."""
    if count > MAX_BYTES_ELEMENTS:
        raise InvalidArgumentError(
            f"{_where(name, model)}: {count} BYTES elements; at most {MAX_BYTES_ELEMENTS} are "
            "accepted per tensor"
        )


def deserialize_bytes(buf: Buffer, count: int, *, name: str, model: str) -> np.ndarray:
    """Decode ``count`` length-prefixed BYTES elements into a 1-D object array of bytes."""
    check_bytes_count(count, name=name, model=model)
    mv = memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf
    size = len(mv)
    if count * 4 > size:
        # Every element takes at least its 4-byte length: refuse before allocating `count`.
        raise InvalidArgumentError(
            f"{_where(name, model)}: BYTES data holds {size // 4} elements, expected {count} "
            f"(its {size} bytes have room for at most {size // 4} 4-byte length prefixes)"
        )
    out = np.empty(count, dtype=np.object_)
    offset = 0
    for i in range(count):
        if offset + 4 > size:
            raise InvalidArgumentError(
                f"{_where(name, model)}: BYTES data holds {i} elements, expected {count}"
            )
        (length,) = _LEN.unpack_from(mv, offset)
        offset += 4
        end = offset + length
        if end > size:
            raise InvalidArgumentError(
                f"{_where(name, model)}: BYTES element {i} claims {length} bytes but only "
                f"{size - offset} remain"
            )
        out[i] = bytes(mv[offset:end])
        offset = end
    if offset != size:
        raise InvalidArgumentError(
            f"{_where(name, model)}: BYTES data has {size - offset} bytes after the "
            f"{count} elements its shape declares"
        )
    return out


def _element_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytearray | memoryview | np.bytes_):
        return bytes(item)
    # Same rule as tritonclient's serialize_byte_tensor: anything else is str()-ed.
    return str(item).encode("utf-8")


def serialize_bytes(arr: np.ndarray) -> bytes:
    """Triton BYTES serialization: 4-byte LE length + bytes per element, row-major."""
    parts: list[bytes] = []
    append = parts.append
    pack = _LEN.pack
    for item in arr.reshape(-1).tolist():
        b = _element_bytes(item)
        append(pack(len(b)))
        append(b)
    return b"".join(parts)


def tensor_from_raw(
    datatype: str, shape: Sequence[int], buf: Buffer, *, name: str, model: str
) -> np.ndarray:
    """Decode one binary tensor; numeric data is a zero-copy view of ``buf``.

    Raises InvalidArgumentError naming the input and model when the byte size does not
    match ``prod(shape) * itemsize`` (or the BYTES elements do not match the shape).
    """
    dt = check_datatype_for(datatype, name=name, model=model)
    shape = check_shape(shape, name=name, model=model)
    count = element_count(shape)
    if dt == "BYTES":
        return deserialize_bytes(buf, count, name=name, model=model).reshape(shape)
    wire = _WIRE_DTYPES[dt]
    expected = count * wire.itemsize
    got = buf.nbytes if isinstance(buf, memoryview) else len(buf)
    if got != expected:
        raise InvalidArgumentError(
            f"{_where(name, model)}: expected {expected} bytes for {dt}{_fmt_shape(shape)}, "
            f"got {got}"
        )
    arr = np.frombuffer(buf, dtype=wire, count=count)
    if not wire.isnative:
        arr = arr.astype(wire.newbyteorder("="))
    return arr.reshape(shape)


def tensor_from_json(
    datatype: str, shape: Sequence[int], data: Any, *, name: str, model: str
) -> np.ndarray:
    """Decode a JSON tensor (flat or nested list) and check its element count."""
    dt = check_datatype_for(datatype, name=name, model=model)
    shape = check_shape(shape, name=name, model=model)
    count = element_count(shape)
    if not isinstance(data, list):
        # A bare scalar is accepted for a one-element tensor, as Triton does.
        data = [data]
    try:
        if dt == "BYTES":
            check_bytes_count(count, name=name, model=model)
            flat = np.asarray(data, dtype=np.object_).reshape(-1)
            arr = np.empty(flat.size, dtype=np.object_)
            for i, item in enumerate(flat.tolist()):
                if isinstance(item, list):
                    raise ValueError("nested lists are ragged")
                arr[i] = _element_bytes(item)
        elif dt == "BOOL":
            arr = np.asarray(data)
            if arr.dtype != np.bool_ and arr.size:
                raise ValueError(f"BOOL data must be true/false, got {arr.dtype} values")
            arr = arr.astype(np.bool_)
        else:
            arr = _json_numbers(data, to_numpy(dt), dt)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidArgumentError(
            f"{_where(name, model)}: JSON data is not a valid {dt} tensor: {exc}"
        ) from None
    if arr.size != count:
        raise InvalidArgumentError(
            f"{_where(name, model)}: shape {_fmt_shape(shape)} needs {count} elements, "
            f"JSON data has {arr.size}"
        )
    return arr.reshape(shape)


def _json_numbers(data: Any, target: np.dtype, dt: str) -> np.ndarray:
    """JSON numbers as ``target``, as strictly as Triton parses them.

    numpy alone would turn the string "NaN" into a float, 1.5 into the integer 1 and
    ``true`` into 1; a client that sends those has a bug worth a 400.
    """
    raw = np.asarray(data)
    if raw.size == 0:
        return raw.astype(target)
    kind = raw.dtype.kind
    if kind in "bUS" or (kind == "O" and target.kind not in "iu"):
        what = {"b": "booleans", "U": "strings", "S": "strings"}.get(kind, "other values")
        raise ValueError(f"{dt} data must be numbers, got {what}")
    if target.kind in "iu":
        if kind == "O" and not all(type(v) is int for v in raw.flat):
            raise ValueError(f"{dt} data must be integers")
        if kind == "f":
            # numpy mixes big integers into float64; only fractions are wrong here.
            info = np.iinfo(target)
            if not (
                np.all(raw == np.trunc(raw)) and raw.min() >= info.min and raw.max() <= info.max
            ):
                raise ValueError(f"{dt} data must be integers within [{info.min}, {info.max}]")
        return np.asarray(data, dtype=target)  # exact from Python ints; OverflowError out of range
    with np.errstate(over="raise"):
        try:
            return raw.astype(target)
        except FloatingPointError:
            raise ValueError(f"values overflow {dt}") from None


def tensor_to_raw(arr: np.ndarray) -> bytes | memoryview:
    """Binary wire form of ``arr``: a zero-copy memoryview when it is already contiguous LE."""
    if arr.dtype.kind in ("O", "S", "U"):
        return serialize_bytes(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr).reshape(-1)
    return memoryview(arr.view(np.uint8))


def raw_bytes(arr: np.ndarray) -> bytes:
    """:func:`tensor_to_raw` as ``bytes`` (protobuf fields need bytes, not memoryview)."""
    raw = tensor_to_raw(arr)
    return raw if isinstance(raw, bytes) else raw.tobytes()


def _utf8(item: Any, name: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, bytes | bytearray | np.bytes_):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"output '{name}' holds BYTES that are not UTF-8 and cannot be sent as JSON; "
                "request it with binary_data=true"
            ) from None
    return str(item)


def tensor_to_json(arr: np.ndarray, *, name: str = "") -> list:
    """Flat row-major JSON list for ``arr`` (BYTES elements as UTF-8 strings)."""
    if arr.dtype.kind in ("O", "S", "U"):
        return [_utf8(x, name) for x in arr.reshape(-1).tolist()]
    return arr.reshape(-1).tolist()


def json_payload(arr: np.ndarray, *, name: str = "") -> Any:
    """What to put under ``"data"`` for orjson with ``OPT_SERIALIZE_NUMPY``.

    Numeric tensors stay a flat native-endian ndarray, which orjson writes far faster
    than a Python list; BYTES become a list of strings.
    """
    if arr.dtype.kind in ("O", "S", "U"):
        return tensor_to_json(arr, name=name)
    flat = np.ascontiguousarray(arr).reshape(-1)
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return flat


def datatype_of(arr: np.ndarray, *, name: str = "", role: str = "output") -> str:
    """KServe datatype of an array, or InvalidArgumentError naming it (``role 'name'``)."""
    try:
        return from_numpy(arr.dtype)
    except InvalidArgumentError:
        raise InvalidArgumentError(
            f"{role} '{name}' has numpy dtype {arr.dtype}, which has no KServe v2 datatype"
        ) from None


def classify(arr: np.ndarray, k: int, *, name: str = "") -> np.ndarray:
    """Triton's classification extension: top-``k`` as BYTES ``"score:index"``.

    A tensor with two or more dims is treated as a batch along dim 0 and each row's
    remaining dims are flattened, giving shape ``[batch, k]``; a 1-D tensor gives ``[k]``.
    """
    if k <= 0:
        raise InvalidArgumentError(f"output '{name}': classification count must be > 0, got {k}")
    if arr.dtype.kind not in "biuf":
        raise InvalidArgumentError(
            f"output '{name}': classification needs a numeric output, got {arr.dtype}"
        )
    rows = arr.reshape(1, -1) if arr.ndim <= 1 else arr.reshape(arr.shape[0], -1)
    k = min(k, rows.shape[1])
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    out = np.empty(order.shape, dtype=np.object_)
    for r in range(rows.shape[0]):
        for c, idx in enumerate(order[r].tolist()):
            out[r, c] = f"{float(rows[r, idx]):f}:{idx}".encode()
    return out.reshape(-1) if arr.ndim <= 1 else out
