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


#: Handle calls a replica takes at once: the fallback path before an ingress has found the
#: endpoint, and the cold start from zero. They queue in the replica's batcher like
#: transport requests, so the cap only needs to be above a batch.
MAX_HANDLE_CALLS = 1024


def version_options(settings: ServerSettings, spec: ModelSpec) -> dict[str, Any]:
    autoscaling: AutoscalingSettings = settings.autoscaling_for(spec)
    autoscaling_config = autoscaling.to_serve()
    # Handles see almost none of the traffic; scale on the queue the replicas report.
    autoscaling_config["policy"] = {"policy_function": POLICY_PATH}
    return {
        "name": DEPLOYMENT_NAME,
        "autoscaling_config": autoscaling_config,
        "ray_actor_options": settings.resources_for(spec),
        "max_ongoing_requests": MAX_HANDLE_CALLS,
        "graceful_shutdown_timeout_s": 30.0,
        "health_check_period_s": 5.0,
        # A hung replica (its requests wait on it) is replaced within ~15 s, not 35.
        "health_check_timeout_s": 10.0,
        # A replica whose __init__ raises (a broken file, a config this host cannot run)
        # fails the same way every time: give up after 3 tries (Serve's default is 20,
        # two minutes) so the model is reported UNAVAILABLE with its reason promptly.
        "max_constructor_retry_count": 3,
        "logging_config": SERVE_LOGGING,
    }


def version_application(
    settings: ServerSettings, spec: ModelSpec, version: int | str
) -> Application:
    """The Serve application for one model version."""
    deployment = serve.deployment(ModelVersion).options(**version_options(settings, spec))
    return deployment.bind(
        str(settings.repository),
        spec.name,
        int(version),
        engine=settings.engine_for(spec.name),
        tcp=settings.transport_tcp,
        telemetry=settings.app_prefix,
    )
