"""Ray Serve applications: builders for ``serve run``/``serve deploy`` and the Serve config YAML.

rayfront is a set of Serve applications: ``rayfront`` (the Gateway) and one
``rayfront--<model>--v<version>`` per live model version. ``rayfront serve`` deploys them
itself; ``rayfront serve --print-config`` writes the equivalent Serve config YAML so the
same deployment runs with stock ``serve deploy`` on a multi-node cluster (KubeRay
RayService included).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.deployment import Application

from rayfront.autoscaling import POLICY_PATH
from rayfront.gateway import Gateway
from rayfront.model_version import ModelVersion
from rayfront.ray_loader import DEPLOYMENT_NAME
from rayfront.repository.layout import Repository
from rayfront.settings import AutoscalingSettings, ServerSettings
from rayfront.spec import ModelSpec

GATEWAY_DEPLOYMENT = "Gateway"

# Ray Serve knobs that matter for a latency-sensitive ingress: run user code and the
# router on the replica's own loop (no cross-thread hop per call). Set for every Ray
# worker through the runtime_env, since Serve reads them when its modules import.
RAY_ENV_VARS: dict[str, str] = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}

_LOGGING = {"enable_access_log": False, "log_level": "INFO"}


def _version_options(settings: ServerSettings, spec: ModelSpec) -> dict[str, Any]:
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
        "logging_config": _LOGGING,
    }


def version_application(
    settings: ServerSettings, spec: ModelSpec, version: int | str
) -> Application:
    """The Serve application for one model version."""
    deployment = serve.deployment(ModelVersion).options(**_version_options(settings, spec))
    return deployment.bind(
        str(settings.repository), spec.name, int(version), data_path=settings.data_path
    )


def gateway_application(settings: ServerSettings) -> Application:
    """The Serve application for the Gateway (ingress)."""
    deployment = serve.deployment(Gateway).options(
        name=GATEWAY_DEPLOYMENT,
        num_replicas=settings.gateway_replicas,
        ray_actor_options={"num_cpus": settings.gateway_num_cpus},
        # The gateway is called by Serve only for health checks and admin; traffic
        # arrives on its own sockets, so Serve's request cap does not apply to it.
        max_ongoing_requests=100,
        graceful_shutdown_timeout_s=40.0,
        logging_config=_LOGGING,
    )
    return deployment.bind(settings.model_dump(mode="json"))


# --- builders for the Serve config YAML (import_path targets) ---------------------------


def build_gateway(args: dict[str, Any]) -> Application:
    """``import_path: rayfront.app:build_gateway``; args are ServerSettings fields."""
    return gateway_application(ServerSettings.model_validate(args))


def build_version(args: dict[str, Any]) -> Application:
    """``import_path: rayfront.app:build_version``; args: settings + model + version."""
    args = dict(args)
    model = args.pop("model")
    version = args.pop("version")
    settings = ServerSettings.model_validate(args)
    spec = Repository(settings.repository).spec(model)
    return version_application(settings, spec, version)


def serve_config(settings: ServerSettings) -> dict[str, Any]:
    """The Serve config (as a dict) that deploys exactly what ``rayfront serve`` would."""
    repo = Repository(settings.repository)
    runtime_env = {"env_vars": dict(RAY_ENV_VARS)}
    settings_args = settings.model_dump(mode="json")
    apps: list[dict[str, Any]] = []
    for model in repo.models():
        spec = repo.spec(model)
        for v in repo.served_versions(model):
            opts = _version_options(settings, spec)
            apps.append(
                {
                    "name": settings.version_app_name(model, v),
                    "route_prefix": None,
                    "import_path": "rayfront.app:build_version",
                    "runtime_env": runtime_env,
                    "args": {**settings_args, "model": model, "version": v},
                    "deployments": [
                        {
                            "name": DEPLOYMENT_NAME,
                            "autoscaling_config": opts["autoscaling_config"],
                            "ray_actor_options": opts["ray_actor_options"],
                            "max_ongoing_requests": opts["max_ongoing_requests"],
                        }
                    ],
                }
            )
    apps.append(
        {
            "name": settings.gateway_app_name,
            "route_prefix": None,
            "import_path": "rayfront.app:build_gateway",
            "runtime_env": runtime_env,
            "args": settings_args,
            "deployments": [
                {"name": GATEWAY_DEPLOYMENT, "num_replicas": settings.gateway_replicas}
            ],
        }
    )
    return {
        # rayfront's gateway owns the HTTP/gRPC ports; Serve's own proxy is not used.
        "proxy_location": "Disabled",
        "logging_config": {"enable_access_log": False},
        "applications": apps,
    }
