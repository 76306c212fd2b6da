"""The persisted canary documents: traffic policy, rollout plan, rollout state, decisions.

One :class:`ModelTraffic` document per model is what :mod:`rayfront.canary.store` writes
to ``<repository>/<model>/rollout.json``. Every model here is immutable (``frozen``): the
controller builds a new document, persists it, and only then swaps it in, so a reader never
sees a half-applied change.

Versions are strings ("1", "2") because that is how the KServe v2 protocol and the
repository's directory names carry them; they must still be Triton version numbers
(positive integers without leading zeros), because anything else would never match a
version directory.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayfront.canary.webhooks import PrometheusGate, Webhook

SCHEMA_VERSION = 1

RolloutStatus = Literal["running", "paused", "promoted", "rolled_back", "aborted"]
DecisionAction = Literal[
    "start", "advance", "promote", "rollback", "pause", "resume", "abort", "manual"
]
OutputKind = Literal["classifier", "regression", "auto"]

#: Mirrored share used when a plan checks agreement but names no shadow percent.
DEFAULT_MIN_AGREEMENT = 0.98
DEFAULT_SHADOW_PERCENT = 10.0
#: Decisions kept per rollout; the oldest beyond this are dropped (the first is kept).
MAX_HISTORY = 500

#: Rollout states in which the controller still owns the model's weights.
ACTIVE_STATUSES: frozenset[str] = frozenset({"running", "paused"})


def check_version(value: str, *, what: str = "version") -> str:
    """Return ``value`` if it is a Triton version label, else raise ValueError naming it."""
    if (
        not isinstance(value, str)
        or not value.isdigit()
        or value != str(int(value))
        or value == "0"
    ):
        raise ValueError(
            f"{what} must be a positive integer version such as '1' or '2' "
            f"(a version directory name, no leading zeros), got {value!r}"
        )
    return value


def version_key(version: str) -> int:
    """Sort key: numeric order, so '10' sorts after '9'."""
    return int(version)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per pydantic error, "field: message", without pydantic's prefixes."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def utcnow() -> datetime:
    """Timezone-aware UTC now (all persisted timestamps are UTC)."""
    return datetime.now(UTC)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_weights(weights: dict[str, int]) -> dict[str, int]:
    if not weights:
        raise ValueError("weights must name at least one version, got {}")
    for version, weight in weights.items():
        check_version(version, what="weights key")
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise ValueError(f"weight of version {version!r} must be an integer, got {weight!r}")
        if not 0 <= weight <= 100:
            raise ValueError(f"weight of version {version!r} must be in 0..100, got {weight}")
    total = sum(weights.values())
    if total != 100:
        shown = ", ".join(f"{v}={w}" for v, w in sorted(weights.items(), key=lambda i: int(i[0])))
        raise ValueError(f"weights must sum to 100, got {total} ({shown})")
    # Canonical order (numeric) so two equal policies serialise identically.
    return dict(sorted(weights.items(), key=lambda item: version_key(item[0])))


class TrafficPolicy(_Doc):
    """How unpinned requests of one model are split between its versions, and what is mirrored."""

    weights: dict[str, int] = Field(
        description="Percent of unpinned requests per version; integers summing to 100. A "
        "version with weight 0 gets no split traffic but stays reachable by pinning."
    )
    shadow_percent: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="Percent of requests (served by another version) also mirrored to "
        "shadow_target; the client never sees the mirrored answer.",
    )
    shadow_target: str | None = Field(
        default=None, description="Version that receives mirrored traffic; None = no mirroring."
    )

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, int]) -> dict[str, int]:
        return _check_weights(v)

    @field_validator("shadow_target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        return None if v is None else check_version(v, what="shadow_target")

    @model_validator(mode="after")
    def _shadow_pair(self) -> TrafficPolicy:
        if self.shadow_percent > 0 and self.shadow_target is None:
            raise ValueError(
                f"shadow_percent is {self.shadow_percent:g} but shadow_target is not set; "
                "name the version to mirror to, or set shadow_percent to 0"
            )
        return self

    @property
    def stable(self) -> str:
        """The version with the largest weight (ties: the highest version)."""
        return max(self.weights, key=lambda v: (self.weights[v], version_key(v)))


class RolloutPlan(_Doc):
    """What a progressive rollout does: its steps and the checks that gate each step."""

    canary_version: str = Field(description="Version being rolled out.")
    stable_version: str = Field(description="Version currently serving; the comparison baseline.")
    steps: list[int] = Field(
        description="Canary weight (percent) per step, strictly ascending, ending at 100."
    )
    interval_s: float = Field(gt=0, description="Seconds each step runs before it is analysed.")
    max_error_rate: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Highest canary error rate (fraction) allowed."
    )
    max_p99_ratio: float = Field(
        default=1.2, gt=0.0, description="Highest canary p99 / stable p99 latency ratio allowed."
    )
    min_agreement: float = Field(
        default=DEFAULT_MIN_AGREEMENT,
        ge=0.0,
        le=1.0,
        description=(
            "Lowest output agreement (fraction of mirrored rows) allowed; 0 = not checked. On by "
            "default: a retrained model with the same signature and wrong weights passes every "
            "latency and error gate, and only its answers give it away."
        ),
    )
    min_requests: int = Field(
        default=100, ge=1, description="Canary requests a step needs before it can be judged."
    )
    data_patience_intervals: float = Field(
        default=4.0,
        ge=0.0,
        description="A step still short of data at its interval keeps running and collecting "
        "for up to this many more intervals before it pauses (0 = pause at once).",
    )
    alpha: float = Field(
        default=0.05,
        gt=0.0,
        lt=0.5,
        description="Significance level: a canary is judged worse on errors or latency only "
        "when a one-sided test (two-proportion z, Mann-Whitney U) says so at this level.",
    )
    latency_floor_ms: float = Field(
        default=5.0,
        ge=0.0,
        description="Smallest canary-minus-stable median latency (ms) that can fail the "
        "latency gate: a few ms of scheduling noise on a busy host never rolls back.",
    )
    min_shadow_samples: int = Field(
        default=20,
        ge=1,
        description="Mirrored rows a step needs before agreement can be judged (when checked).",
    )
    shadow_percent: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="Percent of stable traffic mirrored to the canary while the rollout runs; "
        f"when omitted: {DEFAULT_SHADOW_PERCENT:g} if min_agreement > 0 (agreement needs "
        "mirrored traffic), else 0.",
    )
    output_kind: OutputKind = Field(
        default="auto",
        description="How mirrored outputs are compared: classifier (top-1), regression "
        "(tolerance), or auto (guess per output).",
    )
    agreement_atol: float = Field(
        default=1e-4, ge=0.0, description="Absolute tolerance for regression rows to agree."
    )
    agreement_rtol: float = Field(
        default=1e-3, ge=0.0, description="Relative tolerance for regression rows to agree."
    )
    grace_period_s: float = Field(
        default=30.0,
        ge=0.0,
        description="After promotion, seconds the old stable keeps its replicas before scale-down.",
    )
    webhooks: list[Webhook] = Field(
        default_factory=list,
        description="External gates and notifications (pre-rollout, confirm-rollout, "
        "confirm-promotion, rollback, post-rollout); see rayfront.canary.webhooks.",
    )
    prometheus_gates: list[PrometheusGate] = Field(
        default_factory=list,
        description="PromQL queries checked when a step's own analysis passes.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_shadow(cls, data: Any) -> Any:
        # `--min-agreement 0.98` alone must work (the issue's own example), so an agreement
        # check without an explicit shadow percent mirrors a default share.
        if isinstance(data, dict) and data.get("shadow_percent") is None:
            data = {k: v for k, v in data.items() if k != "shadow_percent"}
            agreement = data.get("min_agreement", DEFAULT_MIN_AGREEMENT)
            if isinstance(agreement, int | float) and agreement > 0:
                data["shadow_percent"] = DEFAULT_SHADOW_PERCENT
        return data

    @field_validator("canary_version", "stable_version")
    @classmethod
    def _version(cls, v: str) -> str:
        return check_version(v)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("steps must not be empty; e.g. [5, 25, 50, 100]")
        for step in v:
            if not 1 <= step <= 100:
                raise ValueError(f"every step must be a canary weight in 1..100, got {v}")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"steps must be strictly ascending, got {v}")
        if v[-1] != 100:
            raise ValueError(f"the last step must be 100 (full promotion), got {v}")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> RolloutPlan:
        if self.canary_version == self.stable_version:
            raise ValueError(
                f"canary_version and stable_version are both {self.canary_version!r}; "
                "a rollout needs two different versions"
            )
        if self.min_agreement > 0 and self.shadow_percent == 0:
            raise ValueError(
                f"min_agreement is {self.min_agreement:g} but shadow_percent is 0: agreement "
                "is measured on mirrored traffic, so set shadow_percent > 0 or min_agreement 0"
            )
        return self

    def weights_at(self, step_index: int) -> dict[str, int]:
        """The weights of step ``step_index``: canary gets the step, stable the rest."""
        canary = self.steps[step_index]
        return _check_weights({self.stable_version: 100 - canary, self.canary_version: canary})


class WindowSummary(_Doc):
    """Request count, errors and p99 of one version over one analysis window."""

    requests: int = Field(ge=0, description="Requests completed in the window.")
    errors: int = Field(ge=0, description="Requests that failed in the window.")
    p99_s: float | None = Field(
        default=None, ge=0, description="p99 latency in seconds; None = no data."
    )
    samples: list[float] = Field(
        default_factory=list,
        description="A uniform sample of the window's latencies (seconds), for rank tests.",
    )

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


class Decision(_Doc):
    """One entry of a rollout's history: what happened, when, why, and on what evidence."""

    at: datetime = Field(description="When the decision was taken (UTC).")
    step: int = Field(ge=0, description="Step index the rollout was at when deciding.")
    action: DecisionAction = Field(description="What was done.")
    reason: str = Field(description="Why, in words an operator can act on.")
    weights: dict[str, int] = Field(
        default_factory=dict, description="Weights in force after the decision."
    )
    comparison: dict[str, Any] = Field(
        default_factory=dict, description="Metrics the decision was based on (JSON values)."
    )


class RolloutState(_Doc):
    """Where one model's progressive rollout stands."""

    model: str = Field(min_length=1, description="Model name.")
    plan: RolloutPlan = Field(description="The plan being executed.")
    status: RolloutStatus = Field(description="running, paused, or a final state.")
    step_index: int = Field(ge=0, description="Index into plan.steps of the current step.")
    step_started_at: datetime = Field(description="When the current step began (UTC).")
    weights: dict[str, int] = Field(description="Weights this rollout has put in force.")
    history: list[Decision] = Field(default_factory=list, description="Decisions, oldest first.")
    rollback_count: int = Field(default=0, ge=0, description="Automatic rollbacks of this rollout.")
    stable_baseline: WindowSummary | None = Field(
        default=None,
        description="Stable's stats from the last step where it had traffic; the baseline "
        "when the stable gets too few requests (e.g. at the 100% step).",
    )
    reason: str = Field(default="", description="Why the rollout is in its current status.")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, int]) -> dict[str, int]:
        return _check_weights(v)

    @model_validator(mode="after")
    def _step_in_range(self) -> RolloutState:
        if self.step_index >= len(self.plan.steps):
            raise ValueError(
                f"step_index {self.step_index} is past the plan's {len(self.plan.steps)} steps"
            )
        return self

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def current_step(self) -> int:
        """Canary weight of the current step."""
        return self.plan.steps[self.step_index]


class Retirement(_Doc):
    """A version that lost its traffic at promotion and is to be scaled down later."""

    version: str = Field(description="Version to scale down.")
    not_before: datetime = Field(description="Earliest time (UTC) its replicas may go.")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return check_version(v)


class RehearsalResult(_Doc):
    """How a candidate did on recorded traffic; persisted in the canary document."""

    at: datetime = Field(description="When the rehearsal ended (UTC).")
    canary_version: str = Field(description="The candidate.")
    stable_version: str = Field(description="The version whose recorded answers it met.")
    requests: int = Field(ge=0, description="Recorded requests replayed.")
    speed: float = Field(gt=0, description="Replay pace as a multiple of the recorded rate.")
    errors: int = Field(ge=0, description="Requests the candidate failed.")
    agreement: float | None = Field(description="Share of rows agreeing with the recording.")
    canary_p50_s: float | None = Field(description="Candidate median latency.")
    canary_p99_s: float | None = Field(description="Candidate p99 latency.")
    stable_p50_s: float | None = Field(description="Stable median latency, same requests.")
    stable_p99_s: float | None = Field(description="Stable p99 latency, same requests.")
    latency_p_value: float | None = Field(description="Mann-Whitney p (candidate slower).")
    verdict: Literal["pass", "fail"] = Field(description="Whether the candidate may go live.")
    reasons: list[str] = Field(default_factory=list, description="Every failed check.")


class ModelTraffic(_Doc):
    """The whole persisted canary document of one model."""

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Document format.")
    model: str = Field(min_length=1, description="Model name (its repository folder).")
    policy: TrafficPolicy = Field(description="Traffic split and mirroring in force.")
    rollout: RolloutState | None = Field(
        default=None, description="The current or most recent rollout; None = never rolled out."
    )
    retirements: list[Retirement] = Field(
        default_factory=list, description="Old versions awaiting scale-down after promotion."
    )
    rehearsals: list[RehearsalResult] = Field(
        default_factory=list, description="Recent rehearsals on recorded traffic, oldest first."
    )
    updated_at: datetime = Field(default_factory=utcnow, description="Last write (UTC).")

    @model_validator(mode="after")
    def _consistent(self) -> ModelTraffic:
        if self.rollout is None:
            return self
        if self.rollout.model != self.model:
            raise ValueError(
                f"rollout belongs to model {self.rollout.model!r}, document to {self.model!r}"
            )
        if self.rollout.active and self.rollout.weights != self.policy.weights:
            # The controller changes both in one write; a mismatch means a hand edit.
            raise ValueError(
                f"active rollout weights {self.rollout.weights} differ from policy weights "
                f"{self.policy.weights}"
            )
        return self
