"""Server settings: one pydantic model, embedded as the Gateway's args in the Serve config YAML.

``rayfront serve`` builds it from flags; ``serve run``/``serve deploy`` get it from the
``args`` of the ``rayfront`` application in the YAML that ``rayfront serve --print-config``
writes. Per-model overrides change autoscaling and resources without touching config.pbtxt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rayfront.errors import RayfrontError
from rayfront.payload_log import PayloadLogSettings
from rayfront.spec import ModelSpec
from rayfront.tracing import TracingSettings

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024

# config.pbtxt `parameters` keys rayfront reads for autoscaling (Triton ignores unknown keys).
PARAM_MIN_REPLICAS = "rayfront.min_replicas"
PARAM_MAX_REPLICAS = "rayfront.max_replicas"
PARAM_TARGET_ONGOING = "rayfront.target_ongoing_requests"


class AutoscalingSettings(BaseModel):
    """Ray Serve autoscaling for one model version's deployment."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas kept running.")
    max_replicas: int = Field(
        default=1, ge=1, description="Most replicas the autoscaler may start."
    )
    initial_replicas: int | None = Field(default=None, ge=0, description="Replicas at deploy time.")
    target_ongoing_requests: float = Field(
        default=1.5,
        gt=0,
        description=(
            "Target load per replica, in batches: batches executing plus requests queued "
            "divided by max_batch_size (see rayfront.deploy.autoscaling)."
        ),
    )
    upscale_delay_s: float = Field(
        default=3.0, ge=0, description="Sustained load before scaling up."
    )
    downscale_delay_s: float = Field(
        default=30.0, ge=0, description="Idle time before scaling down."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        return self

    def to_serve(self) -> dict[str, Any]:
        """The dict Ray Serve's ``autoscaling_config`` takes."""
        out: dict[str, Any] = {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "metrics_interval_s": 1.0,
            "look_back_period_s": 5.0,
        }
        if self.initial_replicas is not None:
            out["initial_replicas"] = self.initial_replicas
        return out


class ModelOverrides(BaseModel):
    """Per-model deployment overrides from the Serve config (win over config.pbtxt)."""

    model_config = ConfigDict(extra="forbid")

    autoscaling: AutoscalingSettings | None = Field(default=None, description="Autoscaling.")
    num_cpus: float | None = Field(default=None, ge=0, description="CPUs per replica.")
    num_gpus: float | None = Field(default=None, ge=0, description="GPUs per replica.")
    batches_in_flight_per_instance: int | None = Field(
        default=None, ge=1, le=8, description="Batches each execution instance keeps in flight."
    )


class ServerSettings(BaseModel):
    """Everything ``rayfront serve`` needs; serialisable into the Serve config YAML."""

    model_config = ConfigDict(extra="forbid")

    repository: Path = Field(description="Triton model repository to serve.")
    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 exposes it.")
    http_port: int = Field(default=8000, ge=0, le=65535, description="KServe v2 HTTP port.")
    grpc_port: int = Field(
        default=8001, ge=0, le=65535, description="KServe v2 gRPC port; 0 = off."
    )
    admin_token: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Token for repository load/unload and canary changes; None = admin disabled. "
            "Prefer admin_token_env or admin_token_file: this one is stored in the Serve config."
        ),
    )
    admin_token_env: str | None = Field(
        default=None,
        min_length=1,
        description="Name of an environment variable of the gateway processes holding the token.",
    )
    admin_token_file: Path | None = Field(
        default=None,
        description="File holding the token (a mounted Kubernetes secret, say); read at start.",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES, gt=0, description="Largest request body accepted."
    )
    max_json_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest JSON part of an infer request; bigger tensors go as binary data.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest HTTP request head (431 beyond it)."
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Time a connection has to send a request's headers (408 after it).",
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="Time a request's body may take to arrive in full."
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Open HTTP connections per ingress process; beyond it new ones get 503.",
    )
    gateway_replicas: int = Field(
        default=1,
        ge=1,
        description=(
            "Ingress processes per cluster; on one node they share the ports (SO_REUSEPORT) "
            "and their requests meet in each replica's batcher."
        ),
    )
    gateway_num_cpus: float = Field(default=0.0, ge=0, description="CPUs reserved per gateway.")
    gateway_resources: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Ray custom resources per gateway replica, to place ingress on chosen nodes (the "
            "RayService manifest pins it to the head pod, where the Service and probes point)."
        ),
    )
    batches_in_flight_per_instance: int | None = Field(
        default=None,
        ge=1,
        le=8,
        description=(
            "Batches each execution instance keeps in flight; default 3 on a GPU, 2 on a CPU "
            "(one runs while the next is collated)."
        ),
    )
    arena_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description=(
            "Shared memory each ingress process sets aside for tensors on their way to the "
            "replicas on its host; 0 = send every tensor through the socket."
        ),
    )
    shared_memory: Literal["local", "any", "off"] = Field(
        default="local",
        description=(
            "Triton's system shared-memory extension: for clients on the server's own host "
            "('local'), for any client ('any': the server then opens /dev/shm objects a remote "
            "client names), or off."
        ),
    )
    transport_tcp: Literal["auto", "always", "never"] = Field(
        default="auto",
        description=(
            "Whether replicas also listen on their node's address: 'auto' when the cluster "
            "has more than one node (ingress elsewhere), else Unix sockets only."
        ),
    )
    replica_num_cpus: float = Field(
        default=0.25,
        ge=0,
        description=(
            "Logical CPUs Ray reserves per model replica. ONNX Runtime uses every core it is "
            "given regardless; a small reservation lets a small box host many model versions. "
            "On a cluster, raise it (or set models.<name>.num_cpus) to pack replicas honestly."
        ),
    )
    payload_log: PayloadLogSettings | None = Field(
        default=None,
        description=(
            "Sampled, bounded log of live requests and live drift against each version's "
            "export reference (rayfront.payload_log, rayfront.monitor); absent = off."
        ),
    )
    tracing: TracingSettings | None = Field(
        default=None,
        description=(
            "OpenTelemetry traces of sampled inference requests, one span per stage "
            "(rayfront.tracing); absent = off."
        ),
    )
    strict_readiness: bool = Field(
        default=False,
        description=(
            "Server readiness needs every model of the repository serving (Triton's "
            "--strict-readiness). Off: models that failed to load do not hold the others back."
        ),
    )
    deploy_timeout_s: float = Field(
        default=180.0,
        gt=0,
        description=(
            "How long a load waits for a version's replicas to start; past it the version is "
            "listed as not ready with the reason (it starts if the resources appear)."
        ),
    )
    replica_wait_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long a request waits for a replica when none is running: one restarting "
            "after a crash, or the first of a version scaled to zero. Then 503."
        ),
    )
    canary_tick_s: float = Field(default=1.0, gt=0, description="How often rollouts are evaluated.")
    retire_grace_s: float = Field(
        default=30.0, ge=0, description="After promotion, how long the old version keeps replicas."
    )
    models: dict[str, ModelOverrides] = Field(
        default_factory=dict, description="Per-model overrides keyed by model name."
    )
    app_prefix: str = Field(
        default="rayfront", description="Prefix of the Serve application names rayfront owns."
    )

    def autoscaling_for(self, spec: ModelSpec) -> AutoscalingSettings:
        """Autoscaling: Serve-config override, else config.pbtxt parameters, else one replica.

        ``instance_group.count`` is not a replica count: it is the execution instances
        inside each replica, as in Triton (see :func:`rayfront.engine.instance_plan`).
        """
        override = self.models.get(spec.name)
        if override is not None and override.autoscaling is not None:
            return override.autoscaling
        params = spec.parameters
        return AutoscalingSettings(
            min_replicas=int(params.get(PARAM_MIN_REPLICAS, 1)),
            max_replicas=int(params.get(PARAM_MAX_REPLICAS, 1)),
            target_ongoing_requests=float(params.get(PARAM_TARGET_ONGOING, 1.5)),
        )

    def resources_for(self, spec: ModelSpec) -> dict[str, float]:
        """Ray actor resources per replica: a KIND_GPU group's ``gpus`` (or one GPU), unless
        overridden (a fraction lets several versions share a GPU)."""
        override = self.models.get(spec.name) or ModelOverrides()
        if override.num_gpus is not None:
            gpus = override.num_gpus
        elif spec.uses_gpu:
            named = {i for g in spec.instance_groups if g.kind == "KIND_GPU" for i in g.gpus}
            gpus = float(max(len(named), 1))
        else:
            gpus = 0.0
        cpus = override.num_cpus if override.num_cpus is not None else self.replica_num_cpus
        return {"num_cpus": cpus, "num_gpus": gpus}

    def engine_for(self, model: str) -> dict[str, int]:
        """The replica engine's settings for ``model`` (rayfront.engine.EngineSettings)."""
        override = self.models.get(model)
        depth = self.batches_in_flight_per_instance
        if override is not None and override.batches_in_flight_per_instance is not None:
            depth = override.batches_in_flight_per_instance
        return {} if depth is None else {"depth": depth}

    @model_validator(mode="after")
    def _one_admin_token_source(self) -> ServerSettings:
        given = [
            n for n in ("admin_token", "admin_token_env", "admin_token_file") if getattr(self, n)
        ]
        if len(given) > 1:
            raise ValueError(f"give the admin token one way, not {' and '.join(given)}")
        return self

    def resolve_admin_token(self) -> str | None:
        """The admin token from whichever source is configured; None keeps admin off.

        A configured source that yields nothing is an error, never "admin open": an unset
        variable or an empty file must not let everyone in.
        """
        if self.admin_token_env:
            token = os.environ.get(self.admin_token_env, "").strip()
            if not token:
                raise RayfrontError(
                    f"admin_token_env names {self.admin_token_env}, which is unset or empty "
                    "in this process; set it or drop admin_token_env to keep admin off"
                )
            return token
        if self.admin_token_file:
            try:
                token = self.admin_token_file.read_text().strip()
            except OSError as exc:
                raise RayfrontError(
                    f"admin_token_file {self.admin_token_file} cannot be read: {exc.strerror}"
                ) from None
            if not token:
                raise RayfrontError(f"admin_token_file {self.admin_token_file} is empty")
            return token
        if self.admin_token is not None and not self.admin_token.strip():
            raise RayfrontError("admin_token is blank; give a real token or leave it out")
        return self.admin_token

    def version_app_name(self, model: str, version: int | str) -> str:
        """Serve application name of one model version (one app each, so each can come and go)."""
        return f"{self.app_prefix}--{model}--v{version}"

    @property
    def gateway_app_name(self) -> str:
        return self.app_prefix
