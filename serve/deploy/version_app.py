"""The Serve application of one model version: deployment options from the model's config.

Each (model, version) is its own application holding one ModelVersion deployment, so a
version can be deployed, autoscaled and retired without touching the ingress or any
other version.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.deployment import Application

from rayfront.deploy.autoscaling import POLICY_PATH
from rayfront.deploy.replica import ModelVersion
from rayfront.settings import AutoscalingSettings, ServerSettings
from rayfront.spec import ModelSpec

DEPLOYMENT_NAME = "ModelVersion"

# Ray Serve knobs that matter for a latency-sensitive ingress: run user code and the
# router on the replica's own loop (no cross-thread hop per call). Set for every Ray
# worker through the runtime_env, since Serve reads them when its modules import.
RAY_ENV_VARS: dict[str, str] = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}

SERVE_LOGGING = {"enable_access_log": False, "log_level": "INFO"}


def version_options(settings: ServerSettings, spec: ModelSpec) -> dict[str, Any]:
    autoscaling: AutoscalingSettings = settings.autoscaling_for(spec)
    inflight = settings.inflight_for(spec.name)
    autoscaling_config = autoscaling.to_serve()
    if settings.data_path == "fast":
        # Handles no longer see the fast path's batches; scale on what replicas report.
        autoscaling_config["policy"] = {"policy_function": POLICY_PATH}
    return {
        "name": DEPLOYMENT_NAME,
        "autoscaling_config": autoscaling_config,
        "ray_actor_options": settings.resources_for(spec),
        # The gateway keeps at most `inflight` batches per replica; the slack absorbs the
        # moment between a downscale and the gateway noticing it. A batch is ONE request
        # here, so this never caps the batch size (max_batch_size rows per call).
        "max_ongoing_requests": inflight * 2,
        "graceful_shutdown_timeout_s": 30.0,
        "health_check_period_s": 5.0,
        "logging_config": SERVE_LOGGING,
    }


def version_application(
    settings: ServerSettings, spec: ModelSpec, version: int | str
) -> Application:
    """The Serve application for one model version."""
    deployment = serve.deployment(ModelVersion).options(**version_options(settings, spec))
    return deployment.bind(
        str(settings.repository), spec.name, int(version), data_path=settings.data_path
    )
