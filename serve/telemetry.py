"""One view of the whole server's metrics and statistics, whichever process answers.

A rayfront server is several processes: ingress processes count requests (and the canary
their outcomes), model replicas count executions, batch sizes and queue waits. Each
process leaves a snapshot of its own metrics (Prometheus text) and Triton statistics on a
shared :class:`Board` every second: Ray's GCS KV under Serve (:mod:`rayfront.deploy.kv`),
a private directory without Ray (:class:`DirectoryBoard`).

``/metrics`` on any ingress answers the union of every live process's snapshot, each
sample labelled ``rayfront_process`` (``ingress-<id>`` or ``replica-<id>``), so counters
never jump between scrapes that land on different processes and ``sum by (model)``
gives the server's totals. ``/v2/models/stats`` sums the statistics the same way. A
process that stopped publishing (killed) drops out after :data:`STALE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson

from rayfront.stats import StatsDict, merge_stats

logger = logging.getLogger(__name__)

#: How often a process publishes its snapshot.
PUBLISH_S = 1.0
#: A snapshot older than this belongs to a process that is gone.
STALE_S = 15.0
PROCESS_LABEL = "rayfront_process"


class Board(Protocol):
    """Where a server's processes leave their snapshots (a small key-value store)."""

    def put(self, key: str, value: bytes) -> None: ...

    def items(self, prefix: str) -> dict[str, bytes]: ...

    def delete(self, key: str) -> None: ...


class DirectoryBoard:
    """A :class:`Board` in a directory only this user can enter (no Ray)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.dir / (key.replace("/", "%2F") + ".snap")

    def put(self, key: str, value: bytes) -> None:
        path = self._path(key)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(value)
        os.replace(tmp, path)

    def items(self, prefix: str) -> dict[str, bytes]:
        out = {}
        for path in self.dir.glob("*.snap"):
            key = path.stem.replace("%2F", "/")
            if key.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    out[key] = path.read_bytes()
        return out

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def snapshot(process: str, metrics_text: bytes, stats: list[StatsDict], **extra: Any) -> bytes:
    """One process's snapshot, as published (``extra``: more JSON fields, e.g. ``canary``)."""
    return orjson.dumps(
        {
            "process": process,
            "at": time.time(),
            "metrics": metrics_text.decode(),
            "stats": stats,
            **extra,
        }
    )


def _live(raw: Iterable[bytes], now: float) -> list[dict[str, Any]]:
    out = []
    for blob in raw:
        try:
            doc = orjson.loads(blob)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and now - float(doc.get("at", 0)) <= STALE_S:
            out.append(doc)
    return out


def merge_metrics(texts: Iterable[tuple[str, str]]) -> bytes:
    """Prometheus text of ``(process, text)`` pairs, every sample labelled with its process.

    Families are written once each (HELP, TYPE, then every process's samples), as the
    exposition format requires. Names are kept exactly as each process wrote them (Triton's
    counters have no ``_total`` suffix, and dashboards query them so).
    """
    order: list[str] = []
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}

    def family_of(name: str) -> str:
        if name not in heads:
            order.append(name)
            heads[name] = []
            samples[name] = []
        return name

    for process, text in texts:
        family = ""
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = family_of(parts[2])
                    if not any(h.startswith(f"# {parts[1]} ") for h in heads[family]):
                        heads[family].append(line)
                continue
            if not family:
                family = family_of(_sample_name(line))
            samples[family].append(_with_label(line, PROCESS_LABEL, process))
    lines: list[str] = []
    for family in order:
        lines += heads[family]
        lines += samples[family]
    return ("\n".join(lines) + "\n").encode()


def _sample_name(line: str) -> str:
    for i, ch in enumerate(line):
        if ch in "{ ":
            return line[:i]
    return line


def _with_label(line: str, key: str, value: str) -> str:
    """``name{a="b"} v`` -> ``name{a="b",key="value"} v`` (quote-aware)."""
    label = f'{key}="{_escape(value)}"'
    name = _sample_name(line)
    rest = line[len(name) :]
    if not rest.startswith("{"):
        return f"{name}{{{label}}}{rest}"
    in_quotes = escaped = False
    for i, ch in enumerate(rest):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == "}" and not in_quotes:
            inner = rest[1:i]
            joined = f"{inner},{label}" if inner.strip() else label
            return f"{name}{{{joined}}}{rest[i + 1 :]}"
    return line  # malformed: leave it as the process wrote it


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Telemetry:
    """Publishes this process's snapshot and reads everyone's (one per process)."""

    def __init__(
        self,
        board: Board | None,
        prefix: str,
        process: str,
        render: Callable[[], bytes],
        stats: Callable[[], list[StatsDict]],
        extras: dict[str, Callable[[], Any]] | None = None,
    ) -> None:
        self.board = board
        self.extras = dict(extras or {})
        self.prefix = prefix.rstrip("/") + "/"
        self.process = process
        self._render = render
        self._stats = stats
        self._task: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        return f"{self.prefix}{self.process}"

    def publish(self) -> None:
        if self.board is not None:
            extra = {name: produce() for name, produce in self.extras.items()}
            self.board.put(self.key, snapshot(self.process, self._render(), self._stats(), **extra))

    def start(self) -> None:
        """Publish every :data:`PUBLISH_S` seconds on the running loop (off-loop writes)."""
        if self.board is None or self._task is not None:
            return

        async def loop() -> None:
            while True:
                try:
                    await asyncio.to_thread(self.publish)
                except Exception as exc:  # the store briefly unreachable: try next time
                    logger.warning("could not publish telemetry: %s", exc)
                await asyncio.sleep(PUBLISH_S)

        self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.board is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.board.delete, self.key)

    def _others(self) -> list[dict[str, Any]]:
        if self.board is None:
            return []
        docs = _live(self.board.items(self.prefix).values(), time.time())
        return [d for d in docs if d.get("process") != self.process]

    def peer_field(self, name: str) -> list[Any]:
        """Field ``name`` of every other live process that publishes it (blocking)."""
        return [d[name] for d in self._others() if d.get(name) is not None]

    def metrics_text(self) -> bytes:
        """Every live process's metrics, this one's fresh (blocking: call off the loop)."""
        texts = [(self.process, self._render().decode())]
        texts += [(str(d["process"]), str(d.get("metrics", ""))) for d in self._others()]
        return merge_metrics(texts)

    def statistics(self) -> list[StatsDict]:
        """Triton statistics summed over every live process (blocking: call off the loop)."""
        return merge_stats(self._stats(), *(d.get("stats") or [] for d in self._others()))
