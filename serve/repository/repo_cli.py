"""``rayfront repo``: list and validate a Triton model repository.

Exit codes: 0 all good, 1 validation found problems, 2 the repository itself cannot be
used (missing, a file, unreadable). Errors are one line on stderr, never a traceback.
The repository modules (protobuf, onnx) are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from rayfront.repository.layout import Repository

app = typer.Typer(help="Inspect and validate a Triton model repository.", no_args_is_help=True)

RepositoryOption = Annotated[
    Path,
    typer.Option(
        "--repository",
        "-r",
        help="Model repository folder (Triton layout: <model>/config.pbtxt, <model>/<version>/).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_DEFAULT_REPOSITORY = Path("model_repository")


def _fail(message: str, code: int = 2) -> typer.Exit:
    # typer.echo, not rich: the error must stay one line whatever the terminal width.
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _open(root: Path) -> Repository:
    from rayfront.errors import RepositoryError
    from rayfront.repository.layout import Repository

    try:
        return Repository(root).require()
    except RepositoryError as err:
        raise _fail(err.message) from None


def _print_json(payload: Any) -> None:
    # Plain print: rich would wrap long lines and break the JSON for pipes.
    print(json.dumps(payload, indent=2, default=str))


def _load_like_serve(spec: Any, version_dir: Path, version: int) -> None:
    """Build the version's engine as a replica does (runtimes, instances), then drop it."""
    import asyncio

    from rayfront.engine import VersionEngine

    engine = VersionEngine.load(spec, version_dir, str(version))
    asyncio.run(engine.close())


@app.command("validate")
def validate_command(
    repository: RepositoryOption = _DEFAULT_REPOSITORY,
    as_json: JsonOption = False,
    load: Annotated[
        bool,
        typer.Option(
            "--load/--no-load",
            help="Also load every served version as `rayfront serve` would on this host "
            "(runtimes, execution providers, instance groups). --no-load checks files only.",
        ),
    ] = True,
) -> None:
    """Check every model: config, version folders, model files, ONNX signatures, parity, plans,
    and (by default) that each served version loads here as `rayfront serve` loads it."""
    from rayfront.errors import RayfrontError
    from rayfront.repository.validate import validate_repository

    repo = _open(repository)
    try:
        reports = validate_repository(repo.root, _load_like_serve if load else None)
    except RayfrontError as err:
        raise _fail(err.message) from None
    except OSError as err:
        raise _fail(f"cannot read model repository {repo.root}: {err}") from None
    ok = all(r.ok for r in reports)

    if as_json:
        _print_json(
            {
                "repository": str(repo.root),
                "ok": ok,
                "models": [r.model_dump(mode="json") for r in reports],
            }
        )
    else:
        table = Table(title=f"model repository {repo.root}", title_justify="left")
        for col in ("model", "version", "status"):
            table.add_column(col, no_wrap=True)
        table.add_column("problem", overflow="fold")
        for r in reports:
            if not r.problems:
                versions = ", ".join(str(v) for v in r.versions)
                table.add_row(r.name, versions, Text("ok", style="green"), "")
            for p in r.problems:
                status = (
                    Text("FAIL", style="bold red")
                    if p.severity == "error"
                    else Text("note", style="yellow")
                )
                version = "-" if p.version is None else str(p.version)
                table.add_row(r.name, version, status, Text(p.message))
        console = Console(highlight=False)
        if reports:
            console.print(table)
        else:
            console.print(Text(f"no models in {repo.root}"))
        failed = [r.name for r in reports if not r.ok]
        console.print(
            Text(f"{len(failed)} of {len(reports)} models have problems: {', '.join(failed)}")
            if failed
            else Text(f"{len(reports)} models ok")
        )
    if not ok:
        raise typer.Exit(1)


def _tensor_summary(tensors: Any) -> str:
    return ", ".join(
        f"{t.name}:{t.datatype}[{','.join(str(d) for d in t.dims)}]" + ("?" if t.optional else "")
        for t in tensors
    )


def _model_listing(repo: Repository, name: str) -> dict[str, Any]:
    from rayfront.errors import RayfrontError

    versions = repo.versions(name)
    entry: dict[str, Any] = {"name": name, "versions": [], "error": None}
    try:
        spec = repo.spec(name)
    except RayfrontError as err:
        entry.update(platform="", max_batch_size=None, inputs=[], outputs=[], error=err.message)
        entry["versions"] = [{"version": v, "served": False} for v in versions]
        return entry
    served = set(repo.served_versions(name, spec))
    entry.update(
        platform=spec.platform or spec.backend,
        max_batch_size=spec.max_batch_size,
        inputs=[t.model_dump(mode="json") for t in spec.inputs],
        outputs=[t.model_dump(mode="json") for t in spec.outputs],
        inputs_summary=_tensor_summary(spec.inputs),
        outputs_summary=_tensor_summary(spec.outputs),
    )
    for v in versions:
        item: dict[str, Any] = {"version": v, "served": v in served}
        try:
            prov = repo.sidecar(name, v)
        except RayfrontError as err:
            item["sidecar_error"] = err.message
            prov = None
        if prov is not None:
            item.update(
                exporter=prov.exporter,
                created_at=prov.created_at.isoformat(),
                parity_max_abs_err=prov.max_abs_err,
                parity_passed=prov.parity_passed,
                tensorrt=prov.tensorrt.tensorrt_version if prov.tensorrt else None,
            )
        entry["versions"].append(item)
    return entry


@app.command("list")
def list_command(
    repository: RepositoryOption = _DEFAULT_REPOSITORY, as_json: JsonOption = False
) -> None:
    """List models with their versions, platform, batching, tensors and recorded parity."""
    repo = _open(repository)
    try:
        listing = [_model_listing(repo, name) for name in repo.models()]
    except OSError as err:
        raise _fail(f"cannot read model repository {repo.root}: {err}") from None
    if as_json:
        _print_json({"repository": str(repo.root), "models": listing})
        return

    table = Table(title=f"model repository {repo.root}", title_justify="left")
    for col in (
        "model",
        "versions",
        "platform",
        "max batch",
        "inputs",
        "outputs",
        "parity max-abs",
    ):
        table.add_column(col, overflow="fold")
    for m in listing:
        # '*' marks the versions the version_policy serves.
        versions = (
            ", ".join(f"{v['version']}{'*' if v['served'] else ''}" for v in m["versions"]) or "-"
        )
        if m["error"]:
            table.add_row(
                m["name"], versions, "?", "?", Text(f"config error: {m['error']}"), "", ""
            )
            continue
        parity = [
            f"v{v['version']}: {v['parity_max_abs_err']:.2g}"
            + ("" if v.get("parity_passed", True) else " FAILED")
            for v in m["versions"]
            if v.get("parity_max_abs_err") is not None
        ]
        table.add_row(
            m["name"],
            versions,
            m["platform"],
            str(m["max_batch_size"]),
            Text(m["inputs_summary"]),
            Text(m["outputs_summary"]),
            "; ".join(parity) or "-",
        )
    console = Console(highlight=False)
    if listing:
        console.print(table)
        console.print(Text("* = served under the model's version_policy"))
    else:
        console.print(Text(f"no models in {repo.root}"))


@app.command("pull")
def pull_command(
    url: Annotated[str, typer.Argument(help="Repository URL: s3://..., gs://..., file://...")],
    into: Annotated[Path, typer.Argument(help="Local folder to serve from.")],
) -> None:
    """Bring a repository on object storage into a local folder, version by version, atomically.

    New and changed versions are staged and renamed into place; unchanged ones are skipped;
    local canary state (rollout.json) is kept. Run it on each node of a cluster that serves
    from local disks, then `rayfront serve -r FOLDER` (or pass the URL to `serve -r`).
    """
    from rayfront.errors import RayfrontError
    from rayfront.repository.remote import pull

    try:
        report = pull(url, into)
    except RayfrontError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    for key in report["updated"]:
        typer.echo(f"updated   {key}")
    for key in report["unchanged"]:
        typer.echo(f"unchanged {key}")
