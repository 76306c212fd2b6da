"""One exception hierarchy for all of rayfront, mapped once to HTTP status and gRPC code.

Transports never invent status codes: they look the error up in :data:`STATUS_TABLE` via
:func:`status_for`. Anything that is not a :class:`RayfrontError` is an internal error,
reported to the client without its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


class RayfrontError(Exception):
    """Root of every error rayfront raises on purpose.

    The message is what a client or CLI user sees, so it names the input, the model and
    what was expected.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(RayfrontError):
    """The request or the user's arguments are malformed (HTTP 400)."""


class NotFoundError(RayfrontError):
    """An unknown model, version or route (HTTP 404)."""


class AlreadyExistsError(RayfrontError):
    """The object already exists, e.g. a second rollout on one model (HTTP 409)."""


class FailedPreconditionError(RayfrontError):
    """The system is not in a state where the action is allowed (HTTP 409)."""


class PermissionDeniedError(RayfrontError):
    """An admin action without a valid token, or with admin disabled (HTTP 403)."""


class UnavailableError(RayfrontError):
    """Temporarily cannot serve: queue full, model not ready, shutting down (HTTP 503)."""

    # When to try again, sent as HTTP Retry-After and gRPC's grpc-retry-pushback-ms, so
    # clients back off instead of hammering a full queue (None: do not advertise).
    retry_after_s: float | None = 1.0


class DeadlineExceededError(UnavailableError):
    """A request's timeout expired before it was executed (HTTP 503)."""

    # The client's own deadline ran out; a retry with the same deadline needs no pushback.
    retry_after_s = None


class PayloadTooLargeError(InvalidArgumentError):
    """Body over the configured cap (HTTP 400 as Triton answers, gRPC RESOURCE_EXHAUSTED)."""


class InternalError(RayfrontError):
    """A runtime or server fault; the client sees the message but never a traceback (500)."""


# --- export / repository side: the CLI turns these into one line and exit code 1 ---------


class ExportError(RayfrontError):
    """Export of a PyTorch model failed; the repository is left as it was."""


class ModelLoadError(ExportError):
    """The model reference cannot be imported, loaded or built."""


class InputSpecError(ExportError, InvalidArgumentError):
    """A ``--input NAME:DTYPE:SHAPE`` (or output) spec is malformed or unsupported."""


class ParityError(ExportError):
    """The exported graph disagrees with PyTorch beyond the tolerance."""


class SignatureMismatchError(ExportError, InvalidArgumentError):
    """A new version's inputs/outputs differ from the existing model's signature."""


class RepositoryError(RayfrontError):
    """The model repository is missing, unreadable or malformed."""


class PlanMismatchError(RepositoryError):
    """A TensorRT plan was built for another TensorRT version or GPU."""


@dataclass(frozen=True)
class Status:
    """How one error class is reported on each transport."""

    http: int
    grpc: grpc.StatusCode


# Most specific class first; status_for() walks the MRO so subclasses inherit.
STATUS_TABLE: dict[type[BaseException], Status] = {
    PayloadTooLargeError: Status(400, grpc.StatusCode.RESOURCE_EXHAUSTED),
    InvalidArgumentError: Status(400, grpc.StatusCode.INVALID_ARGUMENT),
    NotFoundError: Status(404, grpc.StatusCode.NOT_FOUND),
    AlreadyExistsError: Status(409, grpc.StatusCode.ALREADY_EXISTS),
    FailedPreconditionError: Status(409, grpc.StatusCode.FAILED_PRECONDITION),
    PermissionDeniedError: Status(403, grpc.StatusCode.PERMISSION_DENIED),
    DeadlineExceededError: Status(503, grpc.StatusCode.DEADLINE_EXCEEDED),
    UnavailableError: Status(503, grpc.StatusCode.UNAVAILABLE),
    RepositoryError: Status(400, grpc.StatusCode.INVALID_ARGUMENT),
    ExportError: Status(400, grpc.StatusCode.INVALID_ARGUMENT),
    InternalError: Status(500, grpc.StatusCode.INTERNAL),
    RayfrontError: Status(500, grpc.StatusCode.INTERNAL),
}

_INTERNAL = Status(500, grpc.StatusCode.INTERNAL)


def status_for(exc: BaseException) -> Status:
    """The transport status for ``exc``; unknown exceptions are internal errors."""
    for cls in type(exc).__mro__:
        status = STATUS_TABLE.get(cls)
        if status is not None:
            return status
    return _INTERNAL


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds a client should wait before retrying ``exc``, when the server knows."""
    return getattr(exc, "retry_after_s", None) if isinstance(exc, UnavailableError) else None


def client_message(exc: BaseException) -> str:
    """The text a client may see: our own message, or a generic one without internals."""
    if isinstance(exc, RayfrontError):
        return exc.message
    return f"internal error: {type(exc).__name__}"
