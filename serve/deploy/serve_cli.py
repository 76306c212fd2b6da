"""``rayfront serve``: start (or join) Ray, deploy the rayfront Serve applications, block.

It blocks until Ctrl-C/SIGTERM, then drains in-flight requests before tearing down.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import pydantic
import typer

from rayfront.errors import RayfrontError
from rayfront.repository.remote import is_remote

logger = logging.getLogger("rayfront")

ADMIN_TOKEN_ENV = "RAYFRONT_ADMIN_TOKEN"

RepositoryOpt = Annotated[
    str,
    typer.Option(
        "--repository",
        "-r",
        help="Triton model repository to serve: a folder, or a URL (s3://, gs://, file://) "
        "pulled into --repository-cache first.",
    ),
]


def _load_settings_from_yaml(path: Path) -> dict:
    import yaml

    doc = yaml.safe_load(path.read_text())
    for app in doc.get("applications", []):
        if app.get("import_path") == "rayfront.deploy.app:build_gateway":
            return dict(app.get("args") or {})
    raise typer.BadParameter(
        f"{path} has no application with import_path rayfront.deploy.app:build_gateway "
        "(write one with `rayfront serve --print-config`)"
    )


def serve_command(
    ctx: typer.Context,
    repository: RepositoryOpt = "model_repository",
    http_port: Annotated[int, typer.Option(help="KServe v2 HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="KServe v2 gRPC port (0 disables gRPC).")] = 8001,
    host: Annotated[
        str, typer.Option(help="Interface to bind. The default keeps it local; 0.0.0.0 exposes it.")
    ] = "127.0.0.1",
    config: Annotated[
        Path | None,
        typer.Option(
            help="Serve config YAML (from --print-config, possibly edited); its rayfront "
            "settings are used, and explicit flags here override them.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to join (else RAY_ADDRESS, else a local Ray instance)."),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar=ADMIN_TOKEN_ENV,
            help="Enables the admin API (repository load/unload, canary changes) for this token.",
        ),
    ] = None,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the admin token (a mounted secret); read by the gateway at start.",
            dir_okay=False,
        ),
    ] = None,
    gateway_replicas: Annotated[
        int, typer.Option(help="Gateway replicas sharing the ports (SO_REUSEPORT).")
    ] = 1,
    max_body_mb: Annotated[int, typer.Option(help="Largest request body accepted, in MiB.")] = 64,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the Serve config YAML for `serve run`/`serve deploy` and exit.",
        ),
    ] = False,
    config_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="With --print-config: 'serve' (Serve config YAML for serve run/deploy) or "
            "'rayservice' (a KubeRay RayService manifest around it).",
        ),
    ] = "serve",
    image: Annotated[
        str, typer.Option(help="With --format rayservice: the container image of the pods.")
    ] = "rayfront:latest",
    num_cpus: Annotated[
        int | None, typer.Option(help="CPUs for a local Ray instance (default: all).")
    ] = None,
    trace_file: Annotated[
        Path | None,
        typer.Option(
            help="Trace sampled requests (OpenTelemetry, one span per stage) into this JSONL "
            "file. See README 'Tracing'."
        ),
    ] = None,
    trace_otlp: Annotated[
        str,
        typer.Option(
            help="Send traces to this OTLP/HTTP endpoint instead "
            "(e.g. http://collector:4318/v1/traces)."
        ),
    ] = "",
    trace_sample_ratio: Annotated[
        float,
        typer.Option(
            help="Share of requests traced when the caller sends no sampled traceparent "
            "(a sampled traceparent is always followed)."
        ),
    ] = 0.01,
    payload_log: Annotated[
        Path | None,
        typer.Option(
            help="Log a sample of live requests (inputs, outputs, version, latency) into this "
            "directory and measure live drift against each version's export reference "
            "(rayfront_input_drift / rayfront_output_drift on /metrics; rayfront drift report)."
        ),
    ] = None,
    repository_cache: Annotated[
        Path,
        typer.Option(help="Where a --repository URL is pulled to (one folder per URL)."),
    ] = Path.home() / ".cache" / "rayfront" / "repositories",
    payload_sample_ratio: Annotated[
        float, typer.Option(help="Share of successful requests the payload log keeps.")
    ] = 0.1,
) -> None:
    """Serve a model repository through Ray Serve: KServe v2 over HTTP and gRPC.

    One Serve application per model version (dynamic batching, autoscaling replicas) behind
    a gateway that speaks Triton's HTTP and gRPC protocols, so tritonclient works unchanged.
    """
    from rayfront.settings import ServerSettings

    if is_remote(repository):
        from rayfront.repository.remote import cache_dir_for, pull

        local = cache_dir_for(repository, repository_cache)
        try:
            report = pull(repository, local)
        except RayfrontError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(1) from None
        typer.echo(
            f"pulled {repository} into {local}: {len(report['updated'])} updated, "
            f"{len(report['unchanged'])} unchanged",
            err=True,
        )
        repository = str(local)
    base: dict = _load_settings_from_yaml(config) if config else {}
    explicit = {
        "repository": repository,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "host": host,
        "admin_token": admin_token,
        "admin_token_file": admin_token_file,
        "gateway_replicas": gateway_replicas,
        "max_body_bytes": max_body_mb * 1024 * 1024,
    }
    for key, value in explicit.items():
        param = "max_body_mb" if key == "max_body_bytes" else key
        if not config or _is_explicit(ctx, param):
            base[key] = value
    if trace_file is not None or trace_otlp:
        base["tracing"] = {
            **(base.get("tracing") or {}),
            "jsonl_path": str(trace_file.resolve()) if trace_file is not None else "",
            "otlp_endpoint": trace_otlp,
            "sample_ratio": trace_sample_ratio,
        }
    if payload_log is not None:
        base["payload_log"] = {
            **(base.get("payload_log") or {}),
            "directory": str(payload_log.resolve()),
            "sample_ratio": payload_sample_ratio,
        }
    try:
        settings = ServerSettings.model_validate(base)
        if not settings.repository.is_dir():
            raise RayfrontError(
                f"model repository {settings.repository} does not exist or is not a directory"
            )
        settings = settings.model_copy(update={"repository": settings.repository.resolve()})
        settings.resolve_admin_token()  # an unset variable or empty file stops us here
        if print_config:
            from rayfront.deploy.app import serve_config

            if settings.admin_token is not None:
                # Never write a secret into a file meant to be committed or pasted.
                settings = settings.model_copy(
                    update={"admin_token": None, "admin_token_env": ADMIN_TOKEN_ENV}
                )
                typer.echo(
                    f"note: the admin token is not written into the YAML; it says "
                    f"admin_token_env: {ADMIN_TOKEN_ENV}, so set that variable where the Ray "
                    "cluster runs (or use --admin-token-file)",
                    err=True,
                )
            if config_format == "rayservice":
                from rayfront.deploy.kuberay import rayservice_manifest

                doc = rayservice_manifest(settings, image=image)
            elif config_format == "serve":
                doc = serve_config(settings)
            else:
                raise RayfrontError(f"--format {config_format!r}: expected 'serve' or 'rayservice'")
            from rayfront.deploy.kuberay import dump_yaml

            typer.echo(dump_yaml(doc))
            return
        run_server(settings, address=address, num_cpus=num_cpus)
    except RayfrontError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except pydantic.ValidationError as exc:
        for problem in exc.errors():
            where = ".".join(str(p) for p in problem["loc"]) or "settings"
            typer.echo(f"error: {where}: {problem['msg']}", err=True)
        raise typer.Exit(1) from None


def _is_explicit(ctx: typer.Context, param: str) -> bool:
    """Whether a flag was given on the command line (then it overrides the --config YAML)."""
    source = ctx.get_parameter_source(param)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def run_server(settings: object, *, address: str | None, num_cpus: int | None) -> None:
    """Deploy and block until SIGINT/SIGTERM, then drain and tear down."""
    import ray
    from ray import serve

    from rayfront.deploy.app import gateway_application
    from rayfront.deploy.version_app import RAY_ENV_VARS
    from rayfront.settings import ServerSettings

    assert isinstance(settings, ServerSettings)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.update(RAY_ENV_VARS)
    address = address or os.environ.get("RAY_ADDRESS")
    started_ray = not ray.is_initialized()
    if started_ray and not address:
        _ray_in_own_process_groups()
    if started_ray:
        ray.init(
            address=address,
            num_cpus=None if address else num_cpus,
            include_dashboard=False,
            runtime_env={"env_vars": dict(RAY_ENV_VARS)},
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    serve.start(proxy_location="Disabled", logging_config={"enable_access_log": False})
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        logger.info("received %s: draining in-flight requests", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Not serve.run: it blocks until the gateway runs (models loaded), and a SIGTERM
        # during a long start must still stop the server.
        handle = serve._run(
            gateway_application(settings),
            _blocking=False,
            name=settings.gateway_app_name,
            route_prefix=None,
        )
        if not _wait_until_running(settings.gateway_app_name, stop):
            logger.info("stopped while starting")
            return
        ports = handle.ports.remote().result()
        models = sorted(m for m in _served_models(settings))
        typer.echo(
            f"rayfront serving {settings.repository} (models: {', '.join(models) or 'none'})\n"
            f"  HTTP  http://{settings.host}:{ports['http']}/v2\n"
            f"  gRPC  {settings.host}:{ports['grpc'] or 'off'}\n"
            "Ctrl-C drains in-flight requests and stops.",
        )
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _shutdown_with_deadline(settings, started_ray=started_ray and not address)


SHUTDOWN_DEADLINE_S = 60.0


def _wait_until_running(app_name: str, stop: threading.Event) -> bool:
    """Wait for the gateway application to run; False if ``stop`` was set first."""
    from rayfront.deploy.ray_loader import _serve_status

    while not stop.wait(0.5):
        app = (_serve_status() or {}).get(app_name)
        if app is not None and app["status"] == "RUNNING":
            return True
        if app is not None and app["status"] == "DEPLOY_FAILED":
            raise RayfrontError(f"the gateway failed to start: {app['message']}")
    return False


def _ray_in_own_process_groups() -> None:
    """Start the local Ray's processes outside our process group.

    Supervisors stop a service by signalling its whole process group (systemd's default
    KillMode=control-group, ``kill -TERM -PGID``, a terminal's Ctrl-C). Ray's GCS, raylet
    and workers would get that SIGTERM at the same moment as we do and die before the
    gateway could drain, cutting every request in flight. In their own groups only this
    process hears it; it drains, then stops Ray. If this process is killed outright, Ray's
    fate sharing (PR_SET_PDEATHSIG on the processes it starts) still takes them down.
    """
    from ray._private import services

    base = services.ConsolePopen
    if getattr(base, "_rayfront_own_group", False):
        return

    class OwnGroupPopen(base):  # type: ignore[misc, valid-type]
        _rayfront_own_group = True

        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs.setdefault("process_group", 0)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnGroupPopen


def _ray_processes_dead() -> bool:
    """True when the local Ray processes we started (GCS, raylet) are gone.

    A SIGTERM sent to the whole process group reaches them too; then there is nothing left
    to drain and talking to the controller would hang.
    """
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    processes = getattr(node, "all_processes", None) if node is not None else None
    if not processes:
        return False
    for infos in processes.values():
        for info in infos:
            proc = getattr(info, "process", None)
            if proc is not None and proc.poll() is not None:
                return True
    return False


def _shutdown_with_deadline(settings: object, *, started_ray: bool) -> None:
    if started_ray and _ray_processes_dead():
        typer.echo(
            "Ray's own processes were already stopped (signal sent to the whole group); exiting."
        )
        os._exit(0)
    worker = threading.Thread(
        target=shutdown, args=(settings,), kwargs={"started_ray": started_ray}, daemon=True
    )
    worker.start()
    worker.join(SHUTDOWN_DEADLINE_S)
    if worker.is_alive():
        typer.echo(
            f"error: shutdown did not finish in {SHUTDOWN_DEADLINE_S:.0f}s; exiting", err=True
        )
        os._exit(1)


def _served_models(settings: object) -> list[str]:
    from rayfront.repository.layout import Repository

    return Repository(settings.repository).models()  # type: ignore[attr-defined]


def shutdown(settings: object, *, started_ray: bool) -> None:
    """Delete the gateway first (it drains), then the version apps, then Ray if we own it."""
    import ray
    from ray import serve

    try:
        apps = serve.status().applications
        prefix = settings.gateway_app_name  # type: ignore[attr-defined]
        if prefix in apps:
            serve.delete(prefix)
        for name in list(apps):
            if name.startswith(prefix + "--"):
                serve.delete(name, _blocking=False)
        if started_ray:
            serve.shutdown()
    finally:
        if started_ray:
            ray.shutdown()
    typer.echo("rayfront stopped.")
