"""Dynamic batching: a queue, an event and two limits (rows and time).

Each model version's replica keeps one batcher, where the requests of every ingress
process converge. ``submit`` queues a request and waits for its own answer; one scheduler
task forms batches and hands each to the runner, at most ``max_inflight`` at a time (the
execution instances times the batches each keeps in flight). The runner gets the batch
as the list of its requests and collates them itself, straight into a reusable (pinned,
on a GPU) buffer (:mod:`rayfront.runtimes.instances`); :func:`collating` adapts a plain
``execute(collated) -> outputs`` function. The policy, from the model's
``dynamic_batching`` config:

* A batch holds up to ``max_batch_size`` *rows* (a request may carry several rows),
  prefers the ``preferred_batch_size`` values, and only ever mixes requests whose
  non-batch shapes and dtypes agree (:func:`group_key`).
* With a free execution slot, a batch leaves at once unless waiting can help: only when
  other work is outstanding *and* the recent arrival rate would fill the next preferred
  size before the oldest request has waited ``max_queue_delay_microseconds``. A lone
  request at low load therefore never pays the delay. The config parameter
  ``rayfront.batch_wait: full`` restores Triton's rule instead: a batch short of a
  preferred size always waits out the delay (deterministic batches, at a latency cost).
* With every slot busy, requests accumulate, which batches naturally under load.
* Higher priority (lower number, Triton semantics) first, oldest first within a level.
* Per-request timeouts (Triton queue policy) fail a request that is still queued with
  :class:`~rayfront.errors.DeadlineExceededError`; ``max_queue_size`` bounds the queue
  (:class:`~rayfront.errors.UnavailableError`, 503).
* A batch that fails on its data (a runtime error, an out-of-range id) is bisected and
  the halves run again, so only the request that poisoned it fails and every other
  request gets its answer; each split is counted. A failure that is not about the data
  (the replica is gone) reaches every waiter of the batch. A waiter that went away
  (cancelled) is skipped without disturbing the others.

Collation and splitting are pure functions (:func:`collate`, :func:`split`). Models
without ``dynamic_batching`` use :class:`DirectExecutor`, which has the same ``submit``.
Both satisfy :class:`VersionQueue`, what the ingress hands a request to.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rayfront.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    UnavailableError,
)
from rayfront.metrics import InferenceRecorder
from rayfront.params import param_choice
from rayfront.spec import ModelSpec, QueuePolicy
from rayfront.tensors import TensorDict, as_array
from rayfront.tracing import StageTiming

logger = logging.getLogger(__name__)

#: config.pbtxt parameter: ``adaptive`` (default; wait only when it can fill a batch) or
#: ``full`` (Triton's rule: a short batch waits out ``max_queue_delay_microseconds``).
PARAM_BATCH_WAIT = "rayfront.batch_wait"
BATCH_WAITS = ("adaptive", "full")

Execute = Callable[[TensorDict], Awaitable[TensorDict]]
#: Runs one batch given as its requests' inputs; returns one output dict per request.
BatchRunner = Callable[[list[TensorDict]], Awaitable[list[TensorDict]]]
Clock = Callable[[], float]
#: (input name, numpy dtype string, shape without the batch dim), sorted by name.
GroupKey = tuple[tuple[str, str, tuple[int, ...]], ...]

# Weight of the newest inter-arrival gap in the arrival-rate estimate: high enough to
# follow a burst within a few requests, low enough that one odd gap does not swing it.
_RATE_ALPHA = 0.2

_QUEUED, _DISPATCHED, _DONE = 0, 1, 2


# --- pure functions -----------------------------------------------------------------------


def group_key(inputs: TensorDict) -> GroupKey:
    """What must agree for requests to share a batch: names, dtypes, non-batch shapes."""
    return tuple(
        (name, arr.dtype.str, tuple(arr.shape[1:])) for name, arr in sorted(inputs.items())
    )


def request_rows(inputs: TensorDict, model: str = "") -> int:
    """The batch size (dim 0) a request carries; every input must agree on it."""
    if not inputs:
        raise InvalidArgumentError(f"model {model!r}: the request has no inputs")
    rows: int | None = None
    first = ""
    for name, arr in inputs.items():
        if arr.ndim == 0:
            raise InvalidArgumentError(
                f"input {name!r} of model {model!r}: expected a batch dimension first, got a scalar"
            )
        if rows is None:
            rows, first = int(arr.shape[0]), name
        elif arr.shape[0] != rows:
            raise InvalidArgumentError(
                f"model {model!r}: inputs disagree on the batch size (dim 0): "
                f"{first!r} has {rows}, {name!r} has {arr.shape[0]}"
            )
    assert rows is not None  # inputs is non-empty
    if rows < 1:
        raise InvalidArgumentError(
            f"model {model!r}: batch size (dim 0) must be at least 1, got {rows}"
        )
    return rows


def collate(items: list[TensorDict]) -> tuple[TensorDict, list[int]]:
    """Concatenate requests along dim 0; returns the batch and each request's row count.

    Every item must have the same :func:`group_key` (the batcher guarantees it).
    """
    if not items:
        raise ValueError("collate needs at least one request")
    sizes = [request_rows(item) for item in items]
    if len(items) == 1:
        return {name: as_array(value) for name, value in items[0].items()}, sizes
    key = group_key(items[0])
    for i, item in enumerate(items[1:], start=1):
        if group_key(item) != key:
            raise ValueError(
                f"request {i} cannot join this batch: its inputs {_describe(item)} differ "
                f"from the first request's {_describe(items[0])} in names, dtypes or non-batch shapes"
            )
    batch = {
        name: np.concatenate([as_array(item[name]) for item in items], axis=0) for name in items[0]
    }
    return batch, sizes


class MisalignedOutputError(InternalError):
    """A model returned a different number of rows than its batch had: no answer is
    trustworthy, and running smaller batches would hide a broken model, not a bad request."""


def split(outputs: TensorDict, sizes: list[int], *, model: str = "") -> list[TensorDict]:
    """Slice a batch result back into one dict per request (views, in order).

    Raises InternalError when an output's dim 0 is not the batch's total row count:
    the model did not keep rows aligned, so no request's answer can be trusted.
    """
    total = sum(sizes)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            got = "a scalar" if arr.ndim == 0 else f"{arr.shape[0]} rows"
            raise MisalignedOutputError(
                f"model {model!r}: output {name!r} has {got}, expected {total} "
                f"(the rows of {len(sizes)} batched request(s)); cannot split the batch"
            )
    if len(sizes) == 1:
        return [dict(outputs)]
    bounds = list(itertools.accumulate(sizes, initial=0))
    return [
        {name: arr[start:end] for name, arr in outputs.items()}
        for start, end in itertools.pairwise(bounds)
    ]


def _describe(inputs: TensorDict) -> str:
    return ", ".join(f"{n}:{a.dtype}{list(a.shape)}" for n, a in sorted(inputs.items()))


def effective_timeout_us(policy: QueuePolicy, timeout_us: int | None, model: str = "") -> int:
    """Triton's rule: a request may shorten the default timeout, never extend it; 0 = none."""
    if timeout_us is not None and timeout_us < 0:
        raise InvalidArgumentError(
            f"model {model!r}: timeout must be >= 0 microseconds, got {timeout_us}"
        )
    default = policy.default_timeout_microseconds
    if not timeout_us or not policy.allow_timeout_override:
        return default
    return min(timeout_us, default) if default else timeout_us


def collating(execute: Execute, *, model: str = "") -> BatchRunner:
    """A runner over ``execute(collated inputs) -> outputs``: collate, run, split."""
    if not callable(execute):
        raise TypeError(f"execute must be an async callable, got {type(execute).__name__}")

    async def run(items: list[TensorDict]) -> list[TensorDict]:
        inputs, sizes = collate(items)
        return split(await execute(inputs), sizes, model=model)

    return run


def _runner(execute: Execute | None, run_batch: BatchRunner | None, model: str) -> BatchRunner:
    if (execute is None) == (run_batch is None):
        raise TypeError("give exactly one of execute (collated) or run_batch (per request)")
    if run_batch is not None:
        if not callable(run_batch):
            raise TypeError(f"run_batch must be an async callable, got {type(run_batch).__name__}")
        return run_batch
    return collating(execute, model=model)  # type: ignore[arg-type]


#: Failures that depend on a request's data; a batch that fails with one is bisected.
DATA_ERRORS: tuple[type[BaseException], ...] = (InternalError, InvalidArgumentError)


# --- executors ----------------------------------------------------------------------------


def _check_inflight(value: int) -> None:
    """Both executors take and update their in-flight limit under the same rule."""
    if value < 1:
        raise ValueError(f"max_inflight must be >= 1, got {value}")


class VersionQueue(Protocol):
    """Where a request for one model version goes: a batcher, an executor, or a replica pool."""

    async def submit(
        self,
        inputs: TensorDict,
        *,
        timeout_us: int | None = None,
        priority: int | None = None,
        timing: StageTiming | None = None,
    ) -> TensorDict: ...

    async def close(self) -> None: ...


@dataclass(slots=True, eq=False)
class _Request:
    inputs: TensorDict
    key: GroupKey
    rows: int
    level: int
    seq: int
    enqueued: float
    timeout_us: int
    future: asyncio.Future[TensorDict]
    state: int = _QUEUED
    dispatched: float = 0.0
    timing: StageTiming | None = None  # filled for a traced request

    def live(self) -> bool:
        return self.state == _QUEUED and not self.future.done()


class DynamicBatcher:
    """Batches requests for one model version by the model's ``dynamic_batching`` config."""

    def __init__(
        self,
        spec: ModelSpec,
        execute: Execute | None = None,
        *,
        run_batch: BatchRunner | None = None,
        version: str = "",
        max_inflight: int = 2,
        metrics: InferenceRecorder | None = None,
        clock: Clock = time.monotonic,
        isolate_failures: bool = True,
    ) -> None:
        run = _runner(execute, run_batch, spec.name)
        if spec.dynamic_batching is None or spec.max_batch_size < 1:
            raise ValueError(
                f"model {spec.name!r} has no dynamic_batching (or max_batch_size 0); "
                "use DirectExecutor or make_executor()"
            )
        _check_inflight(max_inflight)
        self.spec = spec
        self.version = version
        self._run = run
        self._isolate = isolate_failures
        self._metrics = metrics
        self._clock = clock
        self._max_inflight = max_inflight
        #: Batches split to isolate a request that failed them.
        self.isolations = 0
        db = spec.dynamic_batching
        self._policy = db
        self._max_rows = spec.max_batch_size
        self._preferred = tuple(p for p in db.preferred_batch_size if p <= self._max_rows)
        self._delay_s = db.max_queue_delay_microseconds / 1e6
        self._wait_full = param_choice(spec, PARAM_BATCH_WAIT, BATCH_WAITS, "adaptive") == "full"
        self._levels = max(1, db.priority_levels)
        self._max_queue = db.default_queue_policy.max_queue_size
        # Per group key: one deque per priority level (index 0 = highest priority).
        self._queues: dict[GroupKey, list[deque[_Request]]] = {}
        self._rows_by_key: dict[GroupKey, int] = {}
        self._depth = 0
        self._deadlines: list[tuple[float, int, _Request]] = []
        self._seq = itertools.count()
        self._inflight = 0
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._order_tail: asyncio.Future[None] | None = None
        self._closing = False
        # Arrival-rate estimate (EWMA of gaps and of rows per request).
        self._arrivals = 0
        self._last_arrival = 0.0
        self._gap_s = 0.0
        self._rows_per_request = 0.0
        # NOTE: the event and the scheduler task are created on the first submit(), inside
        # the serving event loop; the constructor may run before that loop exists.
        self._wakeup: asyncio.Event | None = None
        self._scheduler: asyncio.Task[None] | None = None

    # -- public API ------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Requests waiting to be dispatched."""
        return self._depth

    @property
    def inflight(self) -> int:
        """Batches executing now."""
        return self._inflight

    @property
    def max_inflight(self) -> int:
        """Batches allowed in flight; the gateway follows the live replica count."""
        return self._max_inflight

    @max_inflight.setter
    def max_inflight(self, value: int) -> None:
        _check_inflight(value)
        grew = value > self._max_inflight
        self._max_inflight = value
        if grew and self._wakeup is not None:
            self._wakeup.set()

    async def submit(
        self,
        inputs: TensorDict,
        *,
        timeout_us: int | None = None,
        priority: int | None = None,
        timing: StageTiming | None = None,
    ) -> TensorDict:
        """Queue one request and return its outputs once its batch has run."""
        name = self.spec.name
        if self._closing:
            raise UnavailableError(f"model {name!r} version {self.version}: shutting down")
        rows = request_rows(inputs, name)
        if rows > self._max_rows:
            raise InvalidArgumentError(
                f"model {name!r}: batch size {rows} exceeds max_batch_size {self._max_rows}"
            )
        level = self._level(priority)
        timeout = effective_timeout_us(self._policy.default_queue_policy, timeout_us, name)
        now = self._clock()
        if self._max_queue and self._depth >= self._max_queue:
            raise UnavailableError(
                f"model {name!r} version {self.version}: queue is full "
                f"({self._depth} requests waiting, max_queue_size {self._max_queue}); retry later"
            )
        loop = asyncio.get_running_loop()
        req = _Request(
            inputs=inputs,
            key=group_key(inputs),
            rows=rows,
            level=level,
            seq=next(self._seq),
            enqueued=now,
            timeout_us=timeout,
            future=loop.create_future(),
            timing=timing,
        )
        self._enqueue(req, now)
        try:
            return await req.future
        except asyncio.CancelledError:
            # The client went away: drop the request if still queued; if its batch is
            # already running, the batch goes on and its slice is discarded.
            if req.state == _QUEUED:
                self._drop(req)
            raise

    async def close(self) -> None:
        """Stop accepting requests, run everything queued, wait for running batches."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._scheduler is not None and not self._scheduler.done():
            await self._scheduler
        while self._batch_tasks:
            await asyncio.gather(*list(self._batch_tasks), return_exceptions=True)

    # -- queue bookkeeping -----------------------------------------------------------

    def _level(self, priority: int | None) -> int:
        levels = self._policy.priority_levels
        if levels == 0:
            return 0
        if not priority:
            default = self._policy.default_priority_level
            # An unset default means "least urgent", so explicit priorities can outrank it.
            return (min(default, levels) if default else levels) - 1
        if not 1 <= priority <= levels:
            raise InvalidArgumentError(
                f"model {self.spec.name!r}: priority {priority} is out of range; "
                f"expected 1 (highest) to {levels} (lowest), or 0 for the default"
            )
        return priority - 1

    def _enqueue(self, req: _Request, now: float) -> None:
        queues = self._queues.get(req.key)
        if queues is None:
            queues = self._queues[req.key] = [deque() for _ in range(self._levels)]
            self._rows_by_key[req.key] = 0
        queues[req.level].append(req)
        self._rows_by_key[req.key] += req.rows
        self._depth += 1
        if req.timeout_us:
            heapq.heappush(self._deadlines, (now + req.timeout_us / 1e6, req.seq, req))
        self._note_arrival(req.rows, now)
        self._pending_changed()
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = asyncio.get_running_loop().create_task(
                self._schedule(self._wakeup),
                name=f"rayfront-batcher-{self.spec.name}-{self.version}",
            )
        self._wakeup.set()

    def _drop(self, req: _Request) -> None:
        """Forget a queued request (expired or cancelled); it stays in its deque, dead."""
        req.state = _DONE
        self._depth -= 1
        self._rows_by_key[req.key] -= req.rows
        self._pending_changed()

    def _note_arrival(self, rows: int, now: float) -> None:
        if self._arrivals:
            gap = now - self._last_arrival
            self._gap_s = (
                gap if self._arrivals == 1 else self._gap_s + _RATE_ALPHA * (gap - self._gap_s)
            )
            self._rows_per_request += _RATE_ALPHA * (rows - self._rows_per_request)
        else:
            self._rows_per_request = float(rows)
        self._arrivals += 1
        self._last_arrival = now

    def _expected_rows(self, now: float, horizon_s: float) -> float:
        """Rows likely to arrive within ``horizon_s`` at the recent arrival rate."""
        if self._arrivals < 2:
            return 0.0
        # A long silence since the last arrival means the rate has dropped, whatever the
        # average says.
        gap = max(self._gap_s, now - self._last_arrival)
        if gap <= 0:
            return float("inf")
        return self._rows_per_request * horizon_s / gap

    def _pending_changed(self) -> None:
        if self._metrics is not None:
            self._metrics.set_pending(self.spec.name, self.version, self._depth)

    # -- scheduling ------------------------------------------------------------------

    async def _schedule(self, wakeup: asyncio.Event) -> None:
        try:
            while True:
                now = self._clock()
                self._expire(now)
                if self._depth == 0:
                    if self._closing:
                        return
                    await self._sleep(wakeup, None)
                    continue
                if self._inflight >= self._max_inflight:
                    await self._sleep(wakeup, self._until_next_deadline(now))
                    continue
                found = self._head()
                if found is None:  # only cancelled requests were left
                    continue
                key, head = found
                wait = self._wait_s(key, head, now)
                if wait <= 0:
                    self._dispatch(key, now)
                    continue
                deadline = self._until_next_deadline(now)
                await self._sleep(wakeup, wait if deadline is None else min(wait, deadline))
        except Exception as exc:
            # A scheduler bug must not leave waiters hanging forever: fail what is queued
            # (the next submit starts a fresh scheduler).
            logger.exception(
                "batcher for model %r version %s stopped", self.spec.name, self.version
            )
            error = InternalError(
                f"model {self.spec.name!r} version {self.version}: batcher failed ({type(exc).__name__})"
            )
            for queues in self._queues.values():
                for dq in queues:
                    for req in dq:
                        if req.live():
                            self._drop(req)
                            req.future.set_exception(error)
            self._queues.clear()
            self._rows_by_key.clear()

    @staticmethod
    async def _sleep(wakeup: asyncio.Event, timeout_s: float | None) -> None:
        # Safe to clear here: nothing else runs between the caller's checks and this wait.
        wakeup.clear()
        if timeout_s is None:
            await wakeup.wait()
            return
        # call_later is much cheaper than wait_for(), which wraps the wait in a new task.
        handle = asyncio.get_running_loop().call_later(max(timeout_s, 0.0), wakeup.set)
        try:
            await wakeup.wait()
        finally:
            handle.cancel()

    def _until_next_deadline(self, now: float) -> float | None:
        while self._deadlines and not self._deadlines[0][2].live():
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] - now if self._deadlines else None

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, req = heapq.heappop(self._deadlines)
            if not req.live():
                continue
            self._drop(req)
            waited_us = round((now - req.enqueued) * 1e6)
            req.future.set_exception(
                DeadlineExceededError(
                    f"model {self.spec.name!r} version {self.version}: request timed out after "
                    f"{waited_us} us in the queue (timeout {req.timeout_us} us) before execution"
                )
            )

    def _head(self) -> tuple[GroupKey, _Request] | None:
        """The request to serve next: highest priority, then oldest, over all groups."""
        best: tuple[int, int, GroupKey, _Request] | None = None
        empty: list[GroupKey] = []
        for key, queues in self._queues.items():
            if self._rows_by_key[key] == 0:
                empty.append(key)
                continue
            for level, dq in enumerate(queues):
                while dq and not dq[0].live():
                    dead = dq.popleft()
                    if dead.state == _QUEUED:  # cancelled, submit() has not run its handler yet
                        self._drop(dead)
                if dq:
                    head = dq[0]
                    if best is None or (level, head.seq) < best[:2]:
                        best = (level, head.seq, key, head)
                    break
        for key in empty:
            del self._queues[key]
            del self._rows_by_key[key]
        return None if best is None else (best[2], best[3])

    def _wait_s(self, key: GroupKey, head: _Request, now: float) -> float:
        """Seconds worth waiting for a better batch; <= 0 means dispatch now."""
        if self._closing or self._delay_s <= 0:
            return 0.0
        rows = self._rows_by_key[key]
        if rows >= self._max_rows or (self._preferred and rows >= self._preferred[-1]):
            return 0.0
        remaining = head.enqueued + self._delay_s - now
        if remaining <= 0:
            return 0.0
        if self._wait_full:
            return remaining
        # Waiting helps only if others are sending too (work outstanding beyond the head)
        # and they arrive fast enough to reach the next preferred size in time.
        if self._inflight == 0 and self._depth <= 1:
            return 0.0
        need = next((p for p in self._preferred if p > rows), self._max_rows) - rows
        if self._expected_rows(now, remaining) < need:
            return 0.0
        # Sleep only until continued silence would disprove the estimate: with r rows per
        # request, the estimate r * (D - T) / max(gap, T - L) drops below `need` at the
        # earlier of these two times (D: the head's deadline, L: the last arrival). A
        # burst followed by silence thus stops waiting long before the full delay.
        r, last, end = self._rows_per_request, self._last_arrival, head.enqueued + self._delay_s
        give_up = min((r * end + need * last) / (need + r), end - need * self._gap_s / r)
        return max(min(end, give_up) - now, 1e-6)

    def _cap(self, rows: int) -> int:
        """Rows to take: the largest preferred size reached, else as many as allowed."""
        reached = [p for p in self._preferred if p <= rows]
        return reached[-1] if reached else self._max_rows

    def _take(self, key: GroupKey, cap: int) -> tuple[list[_Request], int]:
        """Pop requests of one group, priority then age, up to ``cap`` rows (at least one)."""
        batch: list[_Request] = []
        total = 0
        for dq in self._queues[key]:
            while dq:
                req = dq[0]
                if not req.live():
                    dq.popleft()
                    if req.state == _QUEUED:  # cancelled; submit() has not run its handler yet
                        self._drop(req)
                    continue
                # Oldest first: stop at the first request that does not fit rather than
                # skipping it for a younger, smaller one (that would starve large requests).
                if batch and total + req.rows > cap:
                    return batch, total
                dq.popleft()
                batch.append(req)
                total += req.rows
        return batch, total

    def _dispatch(self, key: GroupKey, now: float) -> None:
        batch, total = self._take(key, self._cap(self._rows_by_key[key]))
        if not batch:
            return
        for req in batch:
            req.state = _DISPATCHED
            req.dispatched = now
        self._depth -= len(batch)
        self._rows_by_key[key] -= total
        self._pending_changed()
        self._inflight += 1
        prev = self._order_tail
        mine: asyncio.Future[None] | None = None
        if self._policy.preserve_ordering:
            mine = asyncio.get_running_loop().create_future()
            self._order_tail = mine
        task = asyncio.get_running_loop().create_task(self._run_batch(batch, total, prev, mine))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _run_batch(
        self,
        batch: list[_Request],
        rows: int,
        prev: asyncio.Future[None] | None,
        mine: asyncio.Future[None] | None,
    ) -> None:
        name = self.spec.name
        start = self._clock()
        results: list[TensorDict | BaseException] = []
        try:
            try:
                results = await self._run_isolated([r.inputs for r in batch])
            except asyncio.CancelledError:
                results = [
                    UnavailableError(
                        f"model {name!r} version {self.version}: execution was cancelled"
                    )
                ] * len(batch)
            compute_s = self._clock() - start
            if mine is not None and prev is not None:
                await prev  # preserve_ordering: answer batches in dispatch order
            ok_rows = sum(
                r.rows for r, out in zip(batch, results, strict=True) if isinstance(out, dict)
            )
            if ok_rows and self._metrics is not None:
                self._metrics.record_execution(
                    name, self.version, batch_rows=ok_rows, compute_s=compute_s
                )
            for req, out in zip(batch, results, strict=True):
                if req.future.done():
                    continue
                if isinstance(out, BaseException):
                    req.future.set_exception(out)
                    continue
                req.future.set_result(out)
                if req.timing is not None:
                    req.timing.queue_s = req.dispatched - req.enqueued
                    req.timing.compute_s = compute_s
                    req.timing.batch_requests = len(batch)
                    req.timing.batch_rows = rows
                if self._metrics is not None:
                    self._metrics.record_timing(
                        name,
                        self.version,
                        queue_s=req.dispatched - req.enqueued,
                        compute_s=compute_s,
                    )
        finally:
            self._inflight -= 1
            if mine is not None:
                mine.set_result(None)
            if self._wakeup is not None:
                self._wakeup.set()

    def _shared_failure(self, exc: BaseException, n: int) -> BaseException:
        """The error ``n`` batched requests share, without the runtime's own text.

        A runtime's message quotes the data that broke it (an out-of-range id, a shape),
        which may be another client's: that text goes to the log, never to the others.
        """
        logger.warning(
            "model %r version %s: a batch of %d requests failed: %s",
            self.spec.name,
            self.version,
            n,
            exc,
        )
        which = f"model {self.spec.name!r}" + (f" version {self.version}" if self.version else "")
        return type(exc)(
            f"{which}: the batch of {n} requests this "
            f"one ran in failed ({type(exc).__name__}); the cause is in the server log"
        )

    async def _run_isolated(self, items: list[TensorDict]) -> list[TensorDict | BaseException]:
        """Run ``items``; on a data failure bisect, so only the poisoned requests fail."""
        try:
            outputs = await self._run(items)
            if len(outputs) != len(items):
                raise MisalignedOutputError(
                    f"model {self.spec.name!r}: the runner returned {len(outputs)} results for "
                    f"{len(items)} requests"
                )
            return list(outputs)
        except asyncio.CancelledError:
            raise
        except MisalignedOutputError as exc:
            return [exc] * len(items)
        except DATA_ERRORS as exc:
            if len(items) == 1:
                return [exc]
            if not self._isolate:
                return [self._shared_failure(exc, len(items))] * len(items)
            self.isolations += 1
            if self._metrics is not None:
                self._metrics.record_isolation(self.spec.name, self.version)
            mid = len(items) // 2
            logger.info(
                "model %r version %s: a batch of %d requests failed (%s); running the halves "
                "apart to isolate the request that caused it",
                self.spec.name,
                self.version,
                len(items),
                type(exc).__name__,
            )
            return [*await self._run_isolated(items[:mid]), *await self._run_isolated(items[mid:])]
        except Exception as exc:
            # Not about the data (the replica went away, a bug): every waiter gets it.
            return [exc] * len(items)


class DirectExecutor:
    """One request per execution, at most ``max_inflight`` at once; same API as the batcher.

    For models without ``dynamic_batching``. Requests wait FIFO for a free slot; an
    explicit ``timeout_us`` still bounds that wait. ``priority`` is accepted and ignored,
    as Triton's default scheduler does.
    """

    def __init__(
        self,
        spec: ModelSpec,
        execute: Execute | None = None,
        *,
        run_batch: BatchRunner | None = None,
        version: str = "",
        max_inflight: int = 2,
        metrics: InferenceRecorder | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        run = _runner(execute, run_batch, spec.name)
        _check_inflight(max_inflight)
        self.spec = spec
        self.version = version
        self._run = run
        self._metrics = metrics
        self._clock = clock
        # A counter plus FIFO waiters rather than a Semaphore: the limit follows the live
        # replica count and must be able to shrink while executions are running.
        self._limit = max_inflight
        self._in_use = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._policy = (
            spec.dynamic_batching.default_queue_policy if spec.dynamic_batching else QueuePolicy()
        )
        self._waiting = 0
        self._active = 0
        self._idle: asyncio.Event | None = None
        self._closing = False

    @property
    def queue_depth(self) -> int:
        """Requests waiting for an execution slot."""
        return self._waiting

    async def submit(
        self,
        inputs: TensorDict,
        *,
        timeout_us: int | None = None,
        priority: int | None = None,
        timing: StageTiming | None = None,
    ) -> TensorDict:
        """Run one request on its own once a slot is free."""
        name = self.spec.name
        if self._closing:
            raise UnavailableError(f"model {name!r} version {self.version}: shutting down")
        rows = 1
        if self.spec.max_batch_size > 0:
            rows = request_rows(inputs, name)
            if rows > self.spec.max_batch_size:
                raise InvalidArgumentError(
                    f"model {name!r}: batch size {rows} exceeds max_batch_size "
                    f"{self.spec.max_batch_size}"
                )
        timeout = effective_timeout_us(self._policy, timeout_us, name)
        enqueued = self._clock()
        if self._policy.max_queue_size and self._waiting >= self._policy.max_queue_size:
            raise UnavailableError(
                f"model {name!r} version {self.version}: queue is full ({self._waiting} requests "
                f"waiting, max_queue_size {self._policy.max_queue_size}); retry later"
            )
        self._active += 1
        try:
            await self._acquire(timeout)
            started = self._clock()
            try:
                outputs = (await self._run([inputs]))[0]
            finally:
                self._release_slot()
            compute_s = self._clock() - started
            if timing is not None:
                timing.queue_s, timing.compute_s = started - enqueued, compute_s
                timing.batch_requests, timing.batch_rows = 1, rows
            if self._metrics is not None:
                self._metrics.record_execution(
                    name, self.version, batch_rows=rows, compute_s=compute_s
                )
                self._metrics.record_timing(
                    name, self.version, queue_s=started - enqueued, compute_s=compute_s
                )
            return outputs
        finally:
            self._active -= 1
            if self._active == 0 and self._idle is not None:
                self._idle.set()

    @property
    def max_inflight(self) -> int:
        """Executions allowed at once; the gateway follows the live replica count."""
        return self._limit

    @max_inflight.setter
    def max_inflight(self, value: int) -> None:
        _check_inflight(value)
        self._limit = value
        self._wake_slot_waiters()

    def _release_slot(self) -> None:
        self._in_use -= 1
        self._wake_slot_waiters()

    def _wake_slot_waiters(self) -> None:
        free = self._limit - self._in_use
        while free > 0 and self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    async def _take_slot(self) -> None:
        while self._in_use >= self._limit:
            waiter = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                # A cancelled/timed-out waiter that was already woken hands its turn on.
                if waiter.done() and not waiter.cancelled():
                    self._wake_slot_waiters()
                raise
        self._in_use += 1

    async def _acquire(self, timeout_us: int) -> None:
        self._waiting += 1
        self._pending_changed()
        try:
            if not timeout_us:
                await self._take_slot()
                return
            try:
                async with asyncio.timeout(timeout_us / 1e6):
                    await self._take_slot()
            except TimeoutError:
                raise DeadlineExceededError(
                    f"model {self.spec.name!r} version {self.version}: request timed out after "
                    f"{timeout_us} us waiting for an execution slot (timeout {timeout_us} us)"
                ) from None
        finally:
            self._waiting -= 1
            self._pending_changed()

    async def close(self) -> None:
        """Stop accepting requests and wait for those already submitted."""
        self._closing = True
        while self._active:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def _pending_changed(self) -> None:
        if self._metrics is not None:
            self._metrics.set_pending(self.spec.name, self.version, self._waiting)


def make_executor(
    spec: ModelSpec,
    execute: Execute | None = None,
    *,
    run_batch: BatchRunner | None = None,
    version: str = "",
    max_inflight: int = 2,
    metrics: InferenceRecorder | None = None,
    clock: Clock = time.monotonic,
) -> DynamicBatcher | DirectExecutor:
    """A DynamicBatcher when the model batches dynamically, else a DirectExecutor."""
    cls = (
        DynamicBatcher
        if spec.dynamic_batching is not None and spec.max_batch_size > 0
        else DirectExecutor
    )
    return cls(
        spec,
        execute,
        run_batch=run_batch,
        version=version,
        max_inflight=max_inflight,
        metrics=metrics,
        clock=clock,
    )
