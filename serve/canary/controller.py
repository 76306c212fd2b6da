"""CanaryManager: the transport-agnostic owner of every model's traffic policy and rollout.

The gateway holds one manager and, per request:

* unpinned request -> ``manager.router_for(model).pick(route_key, rng)``; a version pinned
  by URL or gRPC ``model_version`` bypasses the router entirely;
* after it answered the client -> ``router.shadow_for(served_version, rng)``; when that
  names a version, send a copy there in the background and call ``record_shadow`` with both
  outputs (the client never waits for it);
* every finished execution, mirrored ones included -> ``record_request(model, version, ok,
  latency_s)``.

Admin operations (``set_weights``, ``set_shadow``, ``start``, ``pause``, ``resume``,
``promote``, ``abort``) validate first and change nothing on error. Every change is
written to the store BEFORE it takes effect in memory: if the write fails the old state
stays in force, and a crash after the write resumes from the new state. Routers are
immutable and swapped whole, so requests in flight keep the router they started with and
none is dropped or failed by a weight change.

``tick(now)`` (or the ``run(interval_s)`` loop) evaluates running rollouts:

* an unhealthy canary (not live, replicas failed to start or crashed) -> rollback at once;
* when the step's interval has elapsed -> :func:`rayfront.canary.analysis.analyze`:
  advance to the next step's weights, promote after the 100% step, roll back (canary
  weight 0, reason recorded), or pause ("insufficient data: ...");
* promotion makes the canary the only weighted version and hands the old stable to
  ``on_retire(model, version, after_s)`` for scale-down after the plan's grace period.

Restart: the constructor loads every persisted document and resumes each rollout at the
same step with the same weights. The request windows lived in memory, so the interval
timer of the current step restarts at construction: the step is judged on a full interval
of fresh data, never on a partial one, and never skipped.

Threading: admin operations and ``evaluate`` serialise on one lock (they do file I/O);
the per-request ``record_*`` methods take a separate, short lock, so a slow fsync never
stalls the data path. ``router_for`` takes no lock.

One manager must own the rollouts of a repository: with several gateway replicas, run the
manager (and ``run``) in one of them or a dedicated deployment; other processes may read
the documents with :meth:`refresh` but must not call ``evaluate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from rayfront.canary.analysis import (
    DEFAULT_RESERVOIR,
    Verdict,
    WindowBook,
    analyze,
    merged_summary,
)
from rayfront.canary.compare import ShadowStats, compare_outputs
from rayfront.canary.gauges import CanaryMetrics
from rayfront.canary.router import Router
from rayfront.canary.signature import signature_diff
from rayfront.canary.state import (
    MAX_HISTORY,
    Decision,
    DecisionAction,
    ModelTraffic,
    RehearsalResult,
    Retirement,
    RolloutPlan,
    RolloutState,
    TrafficPolicy,
    WindowSummary,
    check_version,
    describe_validation_error,
    version_key,
)
from rayfront.canary.store import CanaryStore
from rayfront.canary.webhooks import (
    ROLLBACK_POLL_S,
    call_webhook,
    check_gate,
    first_failure,
    rollback_requested,
)
from rayfront.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    RayfrontError,
)

logger = logging.getLogger(__name__)

#: Rehearsal results kept per model.
MAX_REHEARSALS = 10

SignatureOf = Callable[[str, str], Any]
LiveVersions = Callable[[str], list[str]]
VersionHealthy = Callable[[str, str], bool]
OnRetire = Callable[[str, str, float], None]
Clock = Callable[[], float]
#: The canary windows other ingress processes published (their :meth:`export_windows`).
PeerWindows = Callable[[], list[dict[str, Any]]]


def _step_key(doc: ModelTraffic) -> str | None:
    """Names the window a rollout's current step collects; None when nothing is collected."""
    ro = doc.rollout
    if ro is None or not ro.active:
        return None
    return f"{ro.plan.canary_version}:{ro.step_index}:{ro.step_started_at.isoformat()}"


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _weights_text(weights: Mapping[str, int]) -> str:
    return ", ".join(f"v{v}={w}%" for v, w in weights.items())


class CanaryManager:
    """Traffic policies, rollouts and their analysis for every model of one repository."""

    def __init__(
        self,
        store: CanaryStore,
        *,
        signature_of: SignatureOf,
        live_versions: LiveVersions,
        version_healthy: VersionHealthy,
        clock: Clock = time.time,
        on_retire: OnRetire | None = None,
        registry: CollectorRegistry | None = None,
        reservoir_size: int = DEFAULT_RESERVOIR,
        peer_windows: PeerWindows | None = None,
    ) -> None:
        self._store = store
        self.peer_windows = peer_windows
        self._step_keys: dict[str, str | None] = {}
        self._signature_of = signature_of
        self._live_versions = live_versions
        self._version_healthy = version_healthy
        self._clock = clock
        self._on_retire = on_retire
        self._metrics = CanaryMetrics(registry) if registry is not None else None
        self._lock = threading.RLock()
        self._stats_lock = threading.Lock()
        self._docs: dict[str, ModelTraffic] = {}
        self._routers: dict[str, Router] = {}
        self._windows = WindowBook(reservoir_size)
        self._shadow: dict[tuple[str, str], ShadowStats] = {}
        # When this process started collecting the current step's window, per model.
        self._window_started: dict[str, float] = {}
        self._rollback_polled: dict[str, float] = {}
        self._fingerprints: dict[str, tuple[int, int, int] | None] = {}
        self._load_all()

    # ------------------------------------------------------------------ loading

    def _load_all(self) -> None:
        now = self._clock()
        for model in self._store.models():
            doc = self._store.load(model)
            if doc is None:
                continue
            self._install(doc)
            self._fingerprints[model] = self._store.fingerprint(model)
            ro = doc.rollout
            if ro is not None and ro.active:
                self._window_started[model] = now
                logger.info(
                    "model %r: resuming rollout of version %s at step %d/%d (%s), status %s; "
                    "the step's interval timer restarts now",
                    model,
                    ro.plan.canary_version,
                    ro.step_index + 1,
                    len(ro.plan.steps),
                    _weights_text(ro.weights),
                    ro.status,
                )
            for ret in doc.retirements:
                self._fire_retire(model, ret, now)

    def refresh(self) -> list[str]:
        """Re-read documents changed on disk by the owning manager; returns the models reloaded.

        For processes that route but do not own rollouts (extra gateway replicas).
        """
        changed: list[str] = []
        with self._lock:
            for model in self._store.models():
                fingerprint = self._store.fingerprint(model)
                if fingerprint == self._fingerprints.get(model):
                    continue
                doc = self._store.load(model)
                if doc is not None:
                    self._install(doc)
                    changed.append(model)
                self._fingerprints[model] = fingerprint
        return changed

    @contextlib.contextmanager
    def _mutating(self, model: str) -> Iterator[None]:
        """Read-modify-write of one model's document, safe across gateway processes.

        The change starts from the document on disk (another process may have changed
        it since this one last looked), and no other process writes it meanwhile.
        """
        with self._lock, self._store.exclusive(model):
            self._latest(model)
            yield

    def _latest(self, model: str) -> None:
        fingerprint = self._store.fingerprint(model)
        if fingerprint == self._fingerprints.get(model):
            return
        doc = self._store.load(model)
        if doc is not None:
            self._install(doc)
        self._fingerprints[model] = fingerprint

    # ------------------------------------------------------------------ routing

    def router_for(self, model: str) -> Router:
        """The router of ``model`` (cached; rebuilt on every change). Lock-free."""
        router = self._routers.get(model)
        if router is not None:
            return router
        with self._lock:
            router = self._routers.get(model)
            if router is None:
                router = Router.from_policy(self.policy(model))
                self._routers[model] = router
            return router

    def invalidate(self, model: str) -> None:
        """Forget a cached default router (call when a model's live versions change)."""
        with self._lock:
            if model not in self._docs:
                self._routers.pop(model, None)

    def policy(self, model: str) -> TrafficPolicy:
        """The policy in force: persisted, else 100% to the highest live version (Triton's
        default for unversioned requests)."""
        doc = self._docs.get(model)
        if doc is not None:
            return doc.policy
        live = self._live(model)
        return TrafficPolicy(weights={max(live, key=version_key): 100})

    def default_stable(self, model: str) -> str:
        """The version a rollout compares against when none is named: the heaviest one."""
        return self.policy(model).stable

    # ------------------------------------------------------------------ admin operations

    def set_weights(self, model: str, weights: Mapping[str, Any]) -> TrafficPolicy:
        """Replace the split of ``model``. Allowed without a rollout, or while it is paused."""
        with self._mutating(model):
            live = self._live(model)
            clean = self._parse_weights(model, weights, live)
            doc = self._doc_or_default(model)
            ro = doc.rollout
            if ro is not None and ro.status == "running":
                raise FailedPreconditionError(
                    f"model {model!r} has a running rollout of version {ro.plan.canary_version} "
                    f"(step {ro.step_index + 1}/{len(ro.plan.steps)}); run `rayfront canary "
                    f"pause {model}` first, or `abort` it"
                )
            policy = self._make_policy(
                model,
                weights=clean,
                shadow_percent=doc.policy.shadow_percent,
                shadow_target=doc.policy.shadow_target,
            )
            new_ro = ro
            if ro is not None and ro.active:
                new_ro = self._with_decision(
                    ro,
                    "manual",
                    f"weights set by operator: {_weights_text(policy.weights)}",
                    weights=policy.weights,
                )
            self._commit(doc.model_copy(update={"policy": policy, "rollout": new_ro}))
            logger.info("model %r: weights set to %s", model, _weights_text(policy.weights))
            return policy

    def set_shadow(self, model: str, percent: float, target: str | None) -> TrafficPolicy:
        """Mirror ``percent`` of requests to ``target`` (percent 0 turns mirroring off)."""
        with self._mutating(model):
            live = self._live(model)
            if isinstance(percent, bool) or not isinstance(percent, int | float):
                raise InvalidArgumentError(
                    f"shadow percent of model {model!r} must be a number in 0..100, got {percent!r}"
                )
            doc = self._doc_or_default(model)
            if target is None and percent > 0 and doc.rollout is not None and doc.rollout.active:
                target = doc.rollout.plan.canary_version  # the obvious target during a rollout
            if target is not None:
                self._check_live(model, str(target), live, what="shadow target")
                target = str(target)
            elif percent > 0:
                raise InvalidArgumentError(
                    f"shadow percent {percent:g} for model {model!r} needs a target version "
                    "(no rollout is active to take the canary from)"
                )
            policy = self._make_policy(
                model,
                weights=doc.policy.weights,
                shadow_percent=float(percent),
                shadow_target=target if percent > 0 else None,
            )
            ro = doc.rollout
            if ro is not None and ro.active:
                ro = self._with_decision(
                    ro, "manual", f"shadow set by operator: {percent:g}% to {target}"
                )
            self._commit(doc.model_copy(update={"policy": policy, "rollout": ro}))
            logger.info("model %r: mirroring %g%% of requests to %s", model, percent, target)
            return policy

    def start(self, model: str, plan: RolloutPlan) -> RolloutState:
        """Begin a progressive rollout of ``plan.canary_version`` against ``plan.stable_version``."""
        if not isinstance(plan, RolloutPlan):
            raise TypeError(f"plan must be a RolloutPlan, got {type(plan).__name__}")
        with self._mutating(model):
            live = self._live(model)
            doc = self._doc_or_default(model)
            ro = doc.rollout
            if ro is not None and ro.active:
                raise AlreadyExistsError(
                    f"model {model!r} already has a {ro.status} rollout of version "
                    f"{ro.plan.canary_version} (step {ro.step_index + 1}/{len(ro.plan.steps)}); "
                    f"promote or abort it before starting another"
                )
            self._check_live(model, plan.canary_version, live, what="canary version")
            self._check_live(model, plan.stable_version, live, what="stable version")
            diffs = signature_diff(
                self._signature_of(model, plan.stable_version),
                self._signature_of(model, plan.canary_version),
            )
            if diffs:
                raise InvalidArgumentError(
                    f"canary version {plan.canary_version} of model {model!r} has a different "
                    f"signature from stable version {plan.stable_version}: " + "; ".join(diffs)
                )
            refused = first_failure(
                plan.webhooks, "pre-rollout", _hook_payload(model, plan, 0, "pre-rollout")
            )
            if refused is not None:
                raise FailedPreconditionError(
                    f"model {model!r}: {refused}; the rollout of version {plan.canary_version} "
                    "did not start and the traffic split is unchanged"
                )
            now = self._clock()
            weights = plan.weights_at(0)
            others = {v: w for v, w in doc.policy.weights.items() if v not in weights and w > 0}
            reason = (
                f"rollout of version {plan.canary_version} against {plan.stable_version}: steps "
                f"{plan.steps}, interval {plan.interval_s:g}s"
            )
            if others:
                reason += (
                    f"; versions {sorted(others, key=version_key)} leave the split (still pinnable)"
                )
            state = RolloutState(
                model=model,
                plan=plan,
                status="running",
                step_index=0,
                step_started_at=_dt(now),
                weights=weights,
                history=[self._decision(now, 0, "start", reason, weights)],
            )
            policy = self._make_policy(
                model,
                weights=weights,
                shadow_percent=plan.shadow_percent,
                shadow_target=plan.canary_version if plan.shadow_percent > 0 else None,
            )
            retirements = [r for r in doc.retirements if r.version != plan.canary_version]
            if not self._healthy(model, plan.canary_version):
                # Never give an unhealthy canary traffic: the rollout is recorded and ends here.
                state, policy = self._rollback_state(
                    state, now, f"canary version {plan.canary_version} is unhealthy at start", {}
                )
            self._reset_windows(model, now)
            self._commit(
                doc.model_copy(
                    update={"policy": policy, "rollout": state, "retirements": retirements}
                ),
                decision=state.history[-1],
            )
            return state

    def pause(self, model: str, reason: str = "paused by operator") -> RolloutState:
        """Freeze a running rollout at its current weights."""
        with self._mutating(model):
            doc, ro = self._active(model, allowed=("running",))
            return self._transition(doc, ro, "pause", "paused", reason)

    def resume(self, model: str) -> RolloutState:
        """Continue a paused rollout; the step's interval restarts, its data is kept."""
        with self._mutating(model):
            doc, ro = self._active(model, allowed=("paused",))
            now = self._clock()
            state = self._transition(
                doc, ro, "resume", "running", "resumed by operator", step_started_at=_dt(now)
            )
            self._window_started[model] = now
            return state

    def promote(self, model: str, reason: str = "promoted by operator") -> RolloutState:
        """Give the canary 100% now and make it the stable."""
        with self._mutating(model):
            doc, ro = self._active(model, allowed=("running", "paused"))
            state = self._promote(doc, ro, self._clock(), reason, {})
            self._post_rollout(state)
            return state

    def abort(self, model: str, reason: str = "aborted by operator") -> RolloutState:
        """Stop the rollout and send all traffic back to the stable."""
        with self._mutating(model):
            doc, ro = self._active(model, allowed=("running", "paused"))
            now = self._clock()
            plan = ro.plan
            weights = {plan.stable_version: 100, plan.canary_version: 0}
            state = self._with_decision(ro, "abort", reason, weights=weights, now=now).model_copy(
                update={"status": "aborted", "weights": weights, "reason": reason}
            )
            policy = self._make_policy(model, weights=weights)
            self._commit(
                doc.model_copy(update={"policy": policy, "rollout": state}), state.history[-1]
            )
            self._post_rollout(state)
            return state

    def record_rehearsal(self, model: str, result: RehearsalResult) -> None:
        """Keep a rehearsal's result with the model's document (the newest ten)."""
        with self._mutating(model):
            self._check_live(
                model, result.canary_version, self._live(model), what="rehearsed version"
            )
            doc = self._doc_or_default(model)
            kept = [*doc.rehearsals, result][-MAX_REHEARSALS:]
            self._commit(doc.model_copy(update={"rehearsals": kept}))
        logger.info(
            "model %r: rehearsal of version %s against %s: %s%s",
            model,
            result.canary_version,
            result.stable_version,
            result.verdict,
            f" ({'; '.join(result.reasons)})" if result.reasons else "",
        )

    def mark_retired(self, model: str, version: str) -> None:
        """The integrator scaled ``version`` down: forget its pending retirement."""
        with self._mutating(model):
            doc = self._docs.get(model)
            if doc is None or not any(r.version == version for r in doc.retirements):
                return
            kept = [r for r in doc.retirements if r.version != version]
            self._commit(doc.model_copy(update={"retirements": kept}))

    # ------------------------------------------------------------------ data path

    def record_request(self, model: str, version: str, ok: bool, latency_s: float) -> None:
        """Count one finished execution of ``model`` version ``version``."""
        with self._stats_lock:
            self._windows.record(model, version, ok, latency_s)

    def record_shadow(
        self,
        model: str,
        version: str,
        stable_out: Mapping[str, np.ndarray],
        canary_out: Mapping[str, np.ndarray] | None,
    ) -> None:
        """Compare a mirrored answer of ``version`` with the answer the client got.

        ``canary_out`` None means the mirrored execution failed. Call this off the
        response path: comparing costs about as much as copying the outputs.
        """
        doc = self._docs.get(model)
        ro = doc.rollout if doc is not None else None
        if ro is not None and ro.plan.canary_version == version:
            kind, atol, rtol = ro.plan.output_kind, ro.plan.agreement_atol, ro.plan.agreement_rtol
        else:
            kind, atol, rtol = "auto", 1e-4, 1e-3
        cmp = (
            None
            if canary_out is None
            else compare_outputs(stable_out, canary_out, kind=kind, atol=atol, rtol=rtol)
        )
        with self._stats_lock:
            stats = self._shadow.get((model, version))
            if stats is None:
                stats = self._shadow[(model, version)] = ShadowStats()
            if cmp is None:
                stats.add_error()
            else:
                stats.add(cmp)

    # ------------------------------------------------------------------ evaluation

    async def tick(self, now: float | None = None) -> list[tuple[str, Decision]]:
        """Evaluate every active rollout once (file I/O runs off the event loop)."""
        return await asyncio.to_thread(self.evaluate, now)

    async def run(self, interval_s: float = 1.0) -> None:
        """Evaluate every ``interval_s`` until cancelled."""
        if interval_s <= 0:
            raise ValueError(f"canary tick interval must be > 0 seconds, got {interval_s}")
        while True:
            try:
                await self.tick()
            except RayfrontError as exc:
                logger.error("canary evaluation failed: %s", exc.message)
            except Exception:
                # The loop is the only thing that rolls bad canaries back: it must outlive
                # a failing callback or a full disk. The error is logged with its traceback.
                logger.exception("canary evaluation failed; retrying in %gs", interval_s)
            await asyncio.sleep(interval_s)

    def evaluate(self, now: float | None = None) -> list[tuple[str, Decision]]:
        """Synchronous core of :meth:`tick`; returns the decisions taken."""
        taken: list[tuple[str, Decision]] = []
        with self._lock:
            now = self._clock() if now is None else now
            # Documents on disk too: a rollout may have been started on another gateway.
            for model in sorted(set(self._docs) | set(self._store.models())):
                try:
                    with self._mutating(model):
                        doc = self._docs.get(model)
                        ro = doc.rollout if doc is not None else None
                        if doc is None or ro is None or not ro.active:
                            continue
                        decision = self._evaluate_one(doc, ro, now)
                except RayfrontError as exc:
                    # One model's failure (e.g. its folder was removed) must not stop the
                    # evaluation, and so the rollbacks, of every other model.
                    logger.error("model %r: canary evaluation failed: %s", model, exc.message)
                    continue
                if decision is not None:
                    taken.append((model, decision))
        return taken

    def _evaluate_one(self, doc: ModelTraffic, ro: RolloutState, now: float) -> Decision | None:
        model, plan = doc.model, ro.plan
        if not self._healthy(model, plan.canary_version):
            state = self._apply_rollback(
                doc,
                ro,
                now,
                f"canary version {plan.canary_version} is unhealthy (not live, replicas failed "
                "to start or crashed)",
                {},
            )
            return state.history[-1]
        payload = _hook_payload(model, plan, ro.current_step, "")
        asked = None
        if now - self._rollback_polled.get(model, -math.inf) >= ROLLBACK_POLL_S:
            # Evaluations run every tick; an external kill switch needs no more than this.
            self._rollback_polled[model] = now
            asked = rollback_requested(plan.webhooks, payload)
        if asked is not None:
            state = self._apply_rollback(
                doc, ro, now, f"rollback webhook {asked!r} asked for a rollback", {}
            )
            self._post_rollout(state)
            return state.history[-1]
        if ro.status != "running":
            return None
        started = max(ro.step_started_at.timestamp(), self._window_started.get(model, 0.0))
        if now - started < plan.interval_s:
            return None
        verdict = self._gated(self._analyze(model, ro), plan)
        patience = plan.interval_s * (1 + plan.data_patience_intervals)
        if verdict.inconclusive and now - started < patience:
            # Too little traffic so far: keep the step running and judge it again next tick
            # (low traffic must not stall a rollout at the first interval boundary).
            return None
        final = ro.step_index + 1 >= len(plan.steps)
        if verdict.action == "advance":
            hook = "confirm-promotion" if final else "confirm-rollout"
            refused = first_failure(plan.webhooks, hook, payload)  # type: ignore[arg-type]
            if refused is not None:
                verdict = Verdict("pause", f"{refused}; {verdict.reason}", verdict.comparison)
        if verdict.action == "rollback":
            state = self._apply_rollback(doc, ro, now, verdict.reason, verdict.comparison)
            self._post_rollout(state)
        elif verdict.action == "pause":
            state = self._transition(
                doc, ro, "pause", "paused", verdict.reason, comparison=verdict.comparison, now=now
            )
        elif final:
            state = self._promote(
                doc, ro, now, f"final step passed: {verdict.reason}", verdict.comparison
            )
            self._post_rollout(state)
        else:
            state = self._advance(doc, ro, now, verdict)
        return state.history[-1]

    @staticmethod
    def _gated(verdict: Verdict, plan: RolloutPlan) -> Verdict:
        """A passing step also answers to the plan's Prometheus gates."""
        if verdict.action != "advance" or not plan.prometheus_gates:
            return verdict
        results = [check_gate(g) for g in plan.prometheus_gates]
        verdict.comparison["prometheus"] = [
            {"detail": r.detail, "value": r.value, "action": r.action} for r in results
        ]
        for action in ("rollback", "pause"):
            failed = [r.detail for r in results if r.action == action]
            if failed:
                return Verdict(action, "; ".join(failed), verdict.comparison)  # type: ignore[arg-type]
        return verdict

    def _post_rollout(self, state: RolloutState) -> None:
        """Tell the post-rollout hooks how it ended (in a thread: nothing waits on them)."""
        hooks = [h for h in state.plan.webhooks if h.type == "post-rollout"]
        if not hooks:
            return
        payload = _hook_payload(state.model, state.plan, state.current_step, state.status)
        payload["reason"] = state.reason

        def notify() -> None:
            for hook in hooks:
                result = call_webhook(hook, payload)
                if not result.ok:
                    logger.warning("post-rollout webhook %r: %s", hook.name, result.detail)

        threading.Thread(target=notify, name="rf-post-rollout", daemon=True).start()

    def export_windows(self) -> dict[str, Any]:
        """This process's windows of every running rollout step, for the judging process."""
        out: dict[str, Any] = {}
        with self._stats_lock:
            for model, doc in list(self._docs.items()):
                key = _step_key(doc)
                if key is None:
                    continue
                out[model] = {
                    "step": key,
                    "versions": {
                        v: self._windows.window(model, v).export()
                        for v in self._windows.versions(model)
                    },
                    "shadow": {
                        v: stats.export() for (m, v), stats in self._shadow.items() if m == model
                    },
                }
        return out

    def _peer_parts(self, model: str, key: str | None) -> list[dict[str, Any]]:
        """Other processes' windows of the same step of ``model``'s rollout."""
        if self.peer_windows is None or key is None:
            return []
        try:
            peers = self.peer_windows()
        except Exception as exc:  # the board briefly unreachable: judge on what is here
            logger.warning("model %r: other ingress windows unavailable: %s", model, exc)
            return []
        return [
            p[model]
            for p in peers
            if isinstance(p.get(model), dict) and p[model].get("step") == key
        ]

    def _analyze(self, model: str, ro: RolloutState) -> Verdict:
        plan = ro.plan
        peers = self._peer_parts(model, _step_key(self._docs[model]))
        with self._stats_lock:
            if peers:
                # Every ingress process's share of the traffic, not only this one's.
                def merged(v: str) -> WindowSummary:
                    parts = [self._windows.window(model, v).export()]
                    parts += [p["versions"][v] for p in peers if v in p.get("versions", {})]
                    return merged_summary(parts)

                stable = merged(plan.stable_version)
                canary = merged(plan.canary_version)
            else:
                stable = self._windows.summary(model, plan.stable_version)
                canary = self._windows.summary(model, plan.canary_version)
            shadow = self._shadow.get((model, plan.canary_version))
            shadow_copy = shadow.copy() if shadow is not None else None
        for p in peers:
            theirs = p.get("shadow", {}).get(plan.canary_version)
            if theirs:
                shadow_copy = shadow_copy if shadow_copy is not None else ShadowStats()
                shadow_copy.merge(theirs)
        verdict = analyze(
            stable,
            canary,
            shadow_copy,
            plan,
            stable_baseline=ro.stable_baseline,
            mirror_possible=ro.current_step < 100,
        )
        verdict.comparison["step"] = ro.step_index
        verdict.comparison["canary_weight"] = ro.current_step
        verdict.comparison["ingress_processes"] = 1 + len(peers)
        return verdict

    # ------------------------------------------------------------------ transitions

    def _advance(
        self, doc: ModelTraffic, ro: RolloutState, now: float, verdict: Verdict
    ) -> RolloutState:
        model, plan = doc.model, ro.plan
        nxt = ro.step_index + 1
        weights = plan.weights_at(nxt)
        with self._stats_lock:
            stable_now = self._windows.summary(model, plan.stable_version)
        baseline = stable_now if stable_now.requests >= plan.min_requests else ro.stable_baseline
        reason = f"step {ro.step_index + 1} passed, canary to {plan.steps[nxt]}%: {verdict.reason}"
        state = self._with_decision(
            ro, "advance", reason, weights=weights, comparison=verdict.comparison, now=now
        ).model_copy(
            update={
                "step_index": nxt,
                "step_started_at": _dt(now),
                "weights": weights,
                "stable_baseline": baseline,
                "reason": reason,
            }
        )
        policy = self._make_policy(
            model,
            weights=weights,
            shadow_percent=doc.policy.shadow_percent,
            shadow_target=doc.policy.shadow_target,
        )
        self._commit(doc.model_copy(update={"policy": policy, "rollout": state}), state.history[-1])
        self._reset_windows(model, now)
        return state

    def _rollback_state(
        self, ro: RolloutState, now: float, reason: str, comparison: dict[str, Any]
    ) -> tuple[RolloutState, TrafficPolicy]:
        plan = ro.plan
        weights = {plan.stable_version: 100, plan.canary_version: 0}
        state = self._with_decision(
            ro, "rollback", reason, weights=weights, comparison=comparison, now=now
        ).model_copy(
            update={
                "status": "rolled_back",
                "weights": weights,
                "rollback_count": ro.rollback_count + 1,
                "reason": reason,
            }
        )
        return state, self._make_policy(ro.model, weights=weights)

    def _apply_rollback(
        self,
        doc: ModelTraffic,
        ro: RolloutState,
        now: float,
        reason: str,
        comparison: dict[str, Any],
    ) -> RolloutState:
        state, policy = self._rollback_state(ro, now, reason, comparison)
        self._commit(doc.model_copy(update={"policy": policy, "rollout": state}), state.history[-1])
        return state

    def _promote(
        self,
        doc: ModelTraffic,
        ro: RolloutState,
        now: float,
        reason: str,
        comparison: dict[str, Any],
    ) -> RolloutState:
        model, plan = doc.model, ro.plan
        weights = {plan.canary_version: 100}
        state = self._with_decision(
            ro, "promote", reason, weights=weights, comparison=comparison, now=now
        ).model_copy(
            update={
                "status": "promoted",
                "step_index": len(plan.steps) - 1,
                "weights": weights,
                "reason": reason,
            }
        )
        retirement = Retirement(
            version=plan.stable_version, not_before=_dt(now + plan.grace_period_s)
        )
        retirements = [r for r in doc.retirements if r.version != plan.stable_version]
        retirements.append(retirement)
        policy = self._make_policy(model, weights=weights)
        self._commit(
            doc.model_copy(update={"policy": policy, "rollout": state, "retirements": retirements}),
            state.history[-1],
        )
        self._fire_retire(model, retirement, now)
        return state

    def _transition(
        self,
        doc: ModelTraffic,
        ro: RolloutState,
        action: DecisionAction,
        status: str,
        reason: str,
        *,
        comparison: dict[str, Any] | None = None,
        now: float | None = None,
        step_started_at: datetime | None = None,
    ) -> RolloutState:
        update: dict[str, Any] = {"status": status, "reason": reason}
        if step_started_at is not None:
            update["step_started_at"] = step_started_at
        state = self._with_decision(
            ro, action, reason, comparison=comparison or {}, now=now
        ).model_copy(update=update)
        self._commit(doc.model_copy(update={"rollout": state}), state.history[-1])
        return state

    # ------------------------------------------------------------------ status

    def status(self, model: str) -> dict[str, Any]:
        """Everything about ``model``'s traffic, JSON-ready."""
        with self._lock:
            doc = self._docs.get(model)
            policy = self.policy(model)
            try:
                live = sorted(self._live_versions(model), key=version_key)
            except RayfrontError:
                live = []
            out: dict[str, Any] = {
                "model": model,
                "persisted": doc is not None,
                "live_versions": live,
                "policy": policy.model_dump(mode="json"),
                "rollout": None,
                "latest_comparison": None,
                "retirements": [r.model_dump(mode="json") for r in doc.retirements] if doc else [],
                "rehearsals": [r.model_dump(mode="json") for r in doc.rehearsals] if doc else [],
                "warnings": [
                    f"version {v} has weight {w}% but is not live"
                    for v, w in policy.weights.items()
                    if w > 0 and live and v not in live
                ],
            }
            ro = doc.rollout if doc is not None else None
            if ro is not None:
                # The baseline's latency sample is for the judge, not for readers.
                out["rollout"] = ro.model_dump(
                    mode="json", exclude={"stable_baseline": {"samples"}}
                )
                out["rollout"]["step"] = {
                    "index": ro.step_index,
                    "number": ro.step_index + 1,
                    "of": len(ro.plan.steps),
                    "canary_weight": ro.current_step,
                }
                if ro.status == "running":
                    started = max(
                        ro.step_started_at.timestamp(), self._window_started.get(model, 0.0)
                    )
                    out["rollout"]["next_analysis_in_s"] = max(
                        0.0, started + ro.plan.interval_s - self._clock()
                    )
                for dec in reversed(ro.history):
                    if dec.comparison:
                        out["latest_comparison"] = dec.comparison
                        break
        with self._stats_lock:
            out["windows"] = {
                v: self._windows.summary(model, v).model_dump()
                for v in self._windows.versions(model)
            }
            out["shadow"] = {
                v: stats.to_dict() for (m, v), stats in self._shadow.items() if m == model
            }
        return out

    def models(self) -> list[str]:
        """Models with a persisted canary document."""
        return sorted(self._docs)

    # ------------------------------------------------------------------ helpers

    def _live(self, model: str) -> list[str]:
        live = [str(v) for v in self._live_versions(model)]
        if not live:
            raise NotFoundError(f"model {model!r} not found (no live versions)")
        return live

    @staticmethod
    def _check_live(model: str, version: str, live: list[str], *, what: str) -> None:
        if version not in live:
            shown = ", ".join(sorted(live, key=version_key))
            raise NotFoundError(
                f"{what} {version!r} of model {model!r} is not live (live versions: {shown})"
            )

    def _healthy(self, model: str, version: str) -> bool:
        try:
            live = [str(v) for v in self._live_versions(model)]
        except RayfrontError:
            return False
        return version in live and bool(self._version_healthy(model, version))

    def _parse_weights(
        self, model: str, weights: Mapping[str, Any], live: list[str]
    ) -> dict[str, int]:
        if not isinstance(weights, Mapping) or not weights:
            raise InvalidArgumentError(
                f"weights of model {model!r} must be a non-empty mapping version -> percent, "
                f"e.g. {{'1': 90, '2': 10}}; got {weights!r}"
            )
        clean: dict[str, int] = {}
        for raw_version, raw_weight in weights.items():
            version = str(raw_version)
            try:
                check_version(version, what="weights key")
            except ValueError as exc:
                raise InvalidArgumentError(f"model {model!r}: {exc}") from None
            if isinstance(raw_weight, bool) or not isinstance(raw_weight, int):
                raise InvalidArgumentError(
                    f"weight of version {version} of model {model!r} must be an integer "
                    f"percent, got {raw_weight!r}"
                )
            self._check_live(model, version, live, what="version")
            clean[version] = raw_weight
        return clean

    def _make_policy(
        self,
        model: str,
        *,
        weights: Mapping[str, int],
        shadow_percent: float = 0.0,
        shadow_target: str | None = None,
    ) -> TrafficPolicy:
        try:
            return TrafficPolicy(
                weights=dict(weights), shadow_percent=shadow_percent, shadow_target=shadow_target
            )
        except ValidationError as exc:
            raise InvalidArgumentError(
                f"traffic policy of model {model!r}: {describe_validation_error(exc)}"
            ) from None

    def _doc_or_default(self, model: str) -> ModelTraffic:
        doc = self._docs.get(model)
        return doc if doc is not None else ModelTraffic(model=model, policy=self.policy(model))

    def _active(self, model: str, *, allowed: tuple[str, ...]) -> tuple[ModelTraffic, RolloutState]:
        self._live(model)
        doc = self._docs.get(model)
        ro = doc.rollout if doc is not None else None
        if doc is None or ro is None:
            raise FailedPreconditionError(f"model {model!r} has no rollout; start one first")
        if ro.status not in allowed:
            raise FailedPreconditionError(
                f"rollout of version {ro.plan.canary_version} of model {model!r} is {ro.status}; "
                f"this action needs it to be {' or '.join(allowed)}"
            )
        return doc, ro

    def _decision(
        self,
        now: float,
        step: int,
        action: DecisionAction,
        reason: str,
        weights: Mapping[str, int],
        comparison: dict[str, Any] | None = None,
    ) -> Decision:
        return Decision(
            at=_dt(now),
            step=step,
            action=action,
            reason=reason,
            weights=dict(weights),
            comparison=comparison or {},
        )

    def _with_decision(
        self,
        ro: RolloutState,
        action: DecisionAction,
        reason: str,
        *,
        weights: Mapping[str, int] | None = None,
        comparison: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> RolloutState:
        now = self._clock() if now is None else now
        dec = self._decision(
            now,
            ro.step_index,
            action,
            reason,
            weights if weights is not None else ro.weights,
            comparison,
        )
        history = [*ro.history, dec]
        if len(history) > MAX_HISTORY:
            history = [history[0], *history[-(MAX_HISTORY - 1) :]]
        update: dict[str, Any] = {"history": history}
        if weights is not None:
            update["weights"] = dict(weights)
        return ro.model_copy(update=update)

    def _commit(self, doc: ModelTraffic, decision: Decision | None = None) -> None:
        """Persist ``doc``, then make it the state in force (never the other way round)."""
        # model_copy(update=...) skips validation; re-validate the whole document so a bad
        # combination can never reach the disk.
        try:
            doc = ModelTraffic.model_validate(
                {**doc.model_dump(), "updated_at": _dt(self._clock())}
            )
        except ValidationError as exc:
            raise InvalidArgumentError(
                f"canary state of model {doc.model!r}: {describe_validation_error(exc)}"
            ) from None
        self._store.save(doc)
        self._fingerprints[doc.model] = self._store.fingerprint(doc.model)
        self._install(doc)
        if decision is not None:
            logger.info(
                "model %r canary %s at step %d: %s (weights %s)",
                doc.model,
                decision.action,
                decision.step + 1,
                decision.reason,
                _weights_text(decision.weights),
            )
            if self._metrics is not None:
                self._metrics.decision(
                    doc.model, decision.action, decision.comparison, decision.step
                )

    def _install(self, doc: ModelTraffic) -> None:
        key = _step_key(doc)
        if self._step_keys.get(doc.model, key) != key:
            # Another process moved the rollout on: this process's window starts afresh,
            # as the judging process's did, so their windows describe the same step.
            self._reset_windows(doc.model, self._clock())
        self._step_keys[doc.model] = key
        self._docs[doc.model] = doc
        self._routers[doc.model] = Router.from_policy(doc.policy)
        if self._metrics is not None:
            self._metrics.set_weights(doc.model, doc.policy.weights)

    def _reset_windows(self, model: str, now: float) -> None:
        with self._stats_lock:
            self._windows.reset(model)
            for (m, _), stats in self._shadow.items():
                if m == model:
                    stats.reset()
        self._window_started[model] = now

    def _fire_retire(self, model: str, retirement: Retirement, now: float) -> None:
        after = max(0.0, retirement.not_before.timestamp() - now)
        logger.info(
            "model %r: version %s loses its replicas in %.0fs (promotion grace period)",
            model,
            retirement.version,
            after,
        )
        if self._on_retire is not None:
            self._on_retire(model, retirement.version, after)


def _hook_payload(model: str, plan: RolloutPlan, weight: int, phase: str) -> dict[str, Any]:
    """What every webhook receives (``type`` and ``metadata`` are added per hook)."""
    return {
        "model": model,
        "canary_version": plan.canary_version,
        "stable_version": plan.stable_version,
        "canary_weight": weight,
        "phase": phase,
    }
