"""One admin check for HTTP, gRPC and the canary API.

Admin calls (repository load/unload, canary changes) need the configured token, sent as
``Authorization: Bearer <token>`` or ``x-rayfront-admin-token: <token>`` (HTTP headers or
gRPC metadata). The comparison is constant-time, so response timing says nothing about
how much of a guess was right. Without a configured token the admin API is off: every
admin call is refused, whatever it presents.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from rayfront.errors import PermissionDeniedError

ADMIN_TOKEN_HEADER = "x-rayfront-admin-token"


def presented_token(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> str | None:
    """The admin token a client sent, if any; header names are case-insensitive."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    custom: str | None = None
    bearer: str | None = None
    for key, value in items:
        if not isinstance(value, str):
            continue  # binary gRPC metadata never carries the token
        name = key.lower()
        if name == ADMIN_TOKEN_HEADER and value:
            custom = value
        elif name == "authorization":
            scheme, _, rest = value.partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                bearer = rest.strip()
    return custom if custom is not None else bearer


class AdminAuth:
    """The configured admin token and the one check every transport calls."""

    def __init__(self, token: str | None) -> None:
        if token is not None and not token.strip():
            # An unset shell variable ("$TOKEN") must not open the admin API to everyone.
            raise ValueError(
                "the admin token is empty; give a non-empty token (is the variable you "
                "passed unset?) or leave it out to keep the admin API off"
            )
        self._token = token.encode() if token is not None else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def check(self, presented: str | None, action: str) -> None:
        """Raise :class:`PermissionDeniedError` unless ``presented`` is the admin token.

        ``action`` names what was attempted (``POST /v2/repository/models/m/load``,
        ``RepositoryModelLoad``) so the refusal says what it refused.
        """
        if self._token is None:
            raise PermissionDeniedError(
                f"{action}: the admin API is disabled; start rayfront serve with "
                "--admin-token (or RAYFRONT_ADMIN_TOKEN) to enable it"
            )
        if presented is None or not hmac.compare_digest(presented.encode(), self._token):
            raise PermissionDeniedError(
                f"{action} is an admin call and needs a valid admin token: send "
                f"'Authorization: Bearer <token>' or '{ADMIN_TOKEN_HEADER}: <token>'"
            )

    def check_headers(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]], action: str
    ) -> None:
        """:meth:`check` with the token taken from request headers or gRPC metadata."""
        self.check(presented_token(headers), action)
