"""A KubeRay ``RayService`` manifest for the same deployment ``rayfront serve`` makes.

``rayfront serve --print-config --format rayservice`` writes it. ``spec.serveConfigV2`` is
the Serve config of :func:`rayfront.deploy.app.serve_config`, so KubeRay deploys exactly
what ``rayfront serve`` would. What Kubernetes needs on top:

* The gateway (rayfront's HTTP and gRPC listeners; Serve's own proxy is off) is pinned to
  the head pod with a custom resource, so the pod that exposes the ports and carries the
  probes is the pod that serves them. It binds 0.0.0.0 inside the pod; the Kubernetes
  Service is the boundary.
* Readiness and liveness probes point at rayfront's own routes, ``/v2/health/ready`` and
  ``/v2/health/live`` (Serve's ``/-/healthz`` does not exist without Serve's proxy).
* The admin token comes from a Secret through ``RAYFRONT_ADMIN_TOKEN``; it is never in the
  manifest.
* The model repository is a volume mounted at the same path in every pod.
"""

from __future__ import annotations

from typing import Any

import yaml

from rayfront.deploy.app import serve_config
from rayfront.settings import ServerSettings


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors/aliases, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(doc: Any) -> str:
    """``doc`` as YAML, in the order given, without anchors."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


#: The custom resource only the head pod offers; each gateway replica takes one unit.
GATEWAY_RESOURCE = "rayfront_ingress"
ADMIN_SECRET = "rayfront-admin"


def _container(name: str, image: str, settings: ServerSettings, cpus: str, memory: str) -> dict:
    env = []
    if settings.admin_token_env:
        env.append(
            {
                "name": settings.admin_token_env,
                "valueFrom": {"secretKeyRef": {"name": ADMIN_SECRET, "key": "token"}},
            }
        )
    return {
        "name": name,
        "image": image,
        "env": env,
        "resources": {
            "requests": {"cpu": cpus, "memory": memory},
            "limits": {"cpu": cpus, "memory": memory},
        },
        "volumeMounts": [{"name": "model-repository", "mountPath": str(settings.repository)}],
    }


def _volumes(claim: str) -> list[dict[str, Any]]:
    return [{"name": "model-repository", "persistentVolumeClaim": {"claimName": claim}}]


def rayservice_manifest(
    settings: ServerSettings,
    *,
    name: str = "rayfront",
    image: str = "rayfront:latest",
    repository_claim: str = "rayfront-model-repository",
    workers: int = 1,
    max_workers: int = 4,
    worker_gpus: int = 0,
) -> dict[str, Any]:
    """The RayService (``ray.io/v1``) serving ``settings.repository`` from a volume."""
    import ray

    pod = settings.model_copy(
        update={
            "host": "0.0.0.0",
            "gateway_resources": {GATEWAY_RESOURCE: 1.0},
        }
    )
    http, grpc = pod.http_port, pod.grpc_port
    head = _container("ray-head", image, pod, "2", "8Gi")
    head["ports"] = [
        {"containerPort": 6379, "name": "gcs"},
        {"containerPort": http, "name": "http"},
        *([{"containerPort": grpc, "name": "grpc"}] if grpc else []),
    ]
    head["readinessProbe"] = {
        "httpGet": {"path": "/v2/health/ready", "port": http},
        "periodSeconds": 5,
        "failureThreshold": 3,
    }
    head["livenessProbe"] = {
        "httpGet": {"path": "/v2/health/live", "port": http},
        "initialDelaySeconds": 60,
        "periodSeconds": 10,
        "failureThreshold": 6,
    }
    worker = _container("ray-worker", image, pod, "4", "16Gi")
    if worker_gpus:
        for part in ("requests", "limits"):
            worker["resources"][part]["nvidia.com/gpu"] = str(worker_gpus)
    units = max(pod.gateway_replicas, 1)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": dump_yaml(serve_config(pod)),
            "rayClusterConfig": {
                "rayVersion": ray.__version__,
                "headGroupSpec": {
                    "rayStartParams": {
                        "dashboard-host": "127.0.0.1",
                        "resources": f'"{{\\"{GATEWAY_RESOURCE}\\": {units}}}"',
                    },
                    "template": {
                        "spec": {"containers": [head], "volumes": _volumes(repository_claim)}
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu" if worker_gpus else "cpu",
                        "replicas": workers,
                        "minReplicas": min(workers, max_workers),
                        "maxReplicas": max_workers,
                        "rayStartParams": {},
                        "template": {
                            "spec": {
                                "containers": [worker],
                                "volumes": _volumes(repository_claim),
                            }
                        },
                    }
                ],
            },
        },
    }
