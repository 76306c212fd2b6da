"""Typed readers for a model config's string ``parameters`` (Triton ``parameters { key ... }``).

Shared by the batcher, the engine and the runtimes; every reader names the model, the key,
the value received and what was expected.
"""

from __future__ import annotations

from rayfront.errors import RepositoryError
from rayfront.spec import ModelSpec

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def param_bool(spec: ModelSpec, key: str, default: bool) -> bool:
    """A boolean config parameter ("1"/"0", "true"/"false", "yes"/"no", "on"/"off")."""
    raw = spec.parameters.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RepositoryError(
        f"model {spec.name!r}: parameter {key!r} is {raw!r}; expected true/false (or 1/0)"
    )


def param_int(spec: ModelSpec, key: str, default: int, *, minimum: int = 0) -> int:
    """An integer config parameter, at least ``minimum``."""
    raw = spec.parameters.get(key)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise RepositoryError(
            f"model {spec.name!r}: parameter {key!r} is {raw!r}; expected an integer >= {minimum}"
        )
    return value


def param_choice(spec: ModelSpec, key: str, choices: tuple[str, ...], default: str) -> str:
    """A config parameter that must be one of ``choices`` (case-insensitive)."""
    raw = spec.parameters.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise RepositoryError(
            f"model {spec.name!r}: parameter {key!r} is {raw!r}; expected one of {', '.join(choices)}"
        )
    return value
