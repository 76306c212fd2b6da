"""write_version: numbering, signature checks, config updates and atomicity on failure."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from repo_helpers import make_provenance, make_spec, staging_leftovers, tree_snapshot

from rayfront.errors import RepositoryError, SignatureMismatchError
from rayfront.repository import writer
from rayfront.repository.layout import Repository
from rayfront.repository.pbtxt import read_config
from rayfront.repository.sidecar import read_sidecar
from rayfront.repository.writer import signature_differences, write_version
from rayfront.spec import DynamicBatching, TensorSpec


def _write(root: Path, src: Path, **spec: object) -> Path:
    return write_version(root, make_spec(**spec), {"model.onnx": src}, make_provenance())


def test_write_version_numbers_versions_1_2_3_when_called_repeatedly(
    repo_root: Path, onnx_file: Callable[..., Path]
) -> None:
    dirs = [_write(repo_root, onnx_file()) for _ in range(3)]
    assert [d.name for d in dirs] == ["1", "2", "3"]
    assert Repository(repo_root).versions("m") == [1, 2, 3]
    assert staging_leftovers(repo_root) == []


def test_write_version_creates_repository_config_and_sidecar_when_repository_is_new(
    repo_root: Path, onnx_file: Callable[..., Path]
) -> None:
    src = onnx_file()
    vdir = _write(repo_root, src)
    assert vdir == repo_root / "m" / "1"
    assert (vdir / "model.onnx").read_bytes() == src.read_bytes()
    assert read_config(repo_root / "m") == make_spec()
    prov = read_sidecar(vdir)
    assert prov is not None
    assert prov.files == {"model.onnx": hashlib.sha256(src.read_bytes()).hexdigest()}
    # Staging starts as 0700; the published repository must be readable by a Triton server.
    assert repo_root.stat().st_mode & 0o777 == 0o755
    assert (vdir / "model.onnx").stat().st_mode & 0o777 == 0o644


def test_write_version_copies_extra_files_when_graph_has_external_data(
    repo_root: Path, onnx_file: Callable[..., Path], tmp_path: Path
) -> None:
    data = tmp_path / "weights.bin"
    data.write_bytes(b"\0" * 1024)
    vdir = write_version(
        repo_root,
        make_spec(),
        {"model.onnx": onnx_file(), "weights/model.onnx.data": data},
        make_provenance(),
    )
    assert (vdir / "weights" / "model.onnx.data").read_bytes() == data.read_bytes()
    prov = read_sidecar(vdir)
    assert prov is not None
    assert set(prov.files) == {"model.onnx", "weights/model.onnx.data"}


def test_write_version_uses_given_number_and_refuses_when_it_exists(
    repo_root: Path, onnx_file: Callable[..., Path]
) -> None:
    spec = make_spec()
    assert (
        write_version(
            repo_root, spec, {"model.onnx": onnx_file()}, make_provenance(), version=7
        ).name
        == "7"
    )
    assert _write(repo_root, onnx_file()).name == "8"
    with pytest.raises(RepositoryError, match="version 7 of model 'm' already exists"):
        write_version(repo_root, spec, {"model.onnx": onnx_file()}, make_provenance(), version=7)


def test_write_version_retries_next_number_when_version_is_taken_meanwhile(
    repo_root: Path, onnx_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(2):
        _write(repo_root, onnx_file())
    # A stale view of the repository, as a writer racing another one would have.
    monkeypatch.setattr(Repository, "next_version", lambda self, model: 1)
    assert _write(repo_root, onnx_file()).name == "3"
    assert staging_leftovers(repo_root) == []


def test_write_version_gives_distinct_numbers_when_writers_run_concurrently(
    repo_root: Path, tmp_path: Path
) -> None:
    sources = []
    for i in range(8):
        src = tmp_path / f"src{i}.onnx"
        src.write_bytes(f"model {i}".encode())
        sources.append(src)
    errors: list[BaseException] = []

    def work(src: Path) -> None:
        try:
            write_version(repo_root, make_spec(), {"model.onnx": src}, make_provenance())
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    repo = Repository(repo_root)
    assert repo.versions("m") == list(range(1, 9))
    contents = sorted((repo.version_dir("m", v) / "model.onnx").read_bytes() for v in range(1, 9))
    assert contents == sorted(s.read_bytes() for s in sources)
    assert staging_leftovers(repo_root) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"inputs": (TensorSpec(name="x", datatype="FP16", dims=(3,)),)},
            "input 'x' of model 'm': existing dtype FP32, new FP16",
        ),
        (
            {"inputs": (TensorSpec(name="x", datatype="FP32", dims=(-1,)),)},
            r"input 'x' of model 'm': existing dims \[3\], new \[-1\]",
        ),
        ({"outputs": (TensorSpec(name="z", datatype="FP32", dims=(3,)),)}, "output 'y' missing"),
        (
            {"outputs": (TensorSpec(name="z", datatype="FP32", dims=(3,)),)},
            "output 'z' added by the new version of model 'm'",
        ),
        (
            {"max_batch_size": 0, "dynamic_batching": None},
            r"existing max_batch_size 8 \(batch dim first\), new 0 \(no batch dim\)",
        ),
    ],
    ids=["dtype", "dims", "missing", "added", "batching"],
)
def test_write_version_raises_signature_mismatch_naming_difference_when_signature_changes(
    repo_root: Path, onnx_file: Callable[..., Path], change: dict[str, object], message: str
) -> None:
    _write(repo_root, onnx_file())
    before = tree_snapshot(repo_root)
    with pytest.raises(SignatureMismatchError, match=message):
        _write(repo_root, onnx_file(), **change)
    assert tree_snapshot(repo_root) == before


def test_signature_differences_is_empty_when_only_tensor_order_differs() -> None:
    a = make_spec(
        inputs=(
            TensorSpec(name="a", datatype="FP32", dims=(3,)),
            TensorSpec(name="b", datatype="INT64", dims=(1,)),
        )
    )
    b = make_spec(inputs=tuple(reversed(a.inputs)), max_batch_size=32)
    assert signature_differences(a, b) == []


def test_write_version_refuses_platform_change_when_model_exists(
    repo_root: Path, onnx_file: Callable[..., Path]
) -> None:
    _write(repo_root, onnx_file())
    with pytest.raises(
        RepositoryError, match="is platform 'onnxruntime_onnx', the new version is 'tensorrt_plan'"
    ):
        write_version(
            repo_root,
            make_spec(platform="tensorrt_plan"),
            {"model.plan": onnx_file()},
            make_provenance(),
        )


def test_write_version_rewrites_config_when_only_batching_changes(
    repo_root: Path, onnx_file: Callable[..., Path]
) -> None:
    _write(repo_root, onnx_file())
    new_batching = DynamicBatching(preferred_batch_size=(16,), max_queue_delay_microseconds=500)
    _write(repo_root, onnx_file(), max_batch_size=16, dynamic_batching=new_batching)
    spec = read_config(repo_root / "m")
    assert spec.max_batch_size == 16
    assert spec.dynamic_batching == new_batching
    assert [p.name for p in (repo_root / "m").iterdir() if p.name.startswith(".")] == []


def test_write_version_keeps_hand_written_config_bytes_when_spec_is_unchanged(
    repo_root: Path, onnx_file: Callable[..., Path]
) -> None:
    _write(repo_root, onnx_file())
    config = repo_root / "m" / "config.pbtxt"
    config.write_text("# tuned by hand\n" + config.read_text())
    _write(repo_root, onnx_file())
    assert config.read_text().startswith("# tuned by hand\n")


@pytest.mark.parametrize(
    ("files", "exc", "message"),
    [
        ({}, ValueError, r"lack 'model\.onnx'"),
        ({"model.onnx": None, "../evil": None}, ValueError, r"file name '\.\./evil'"),
        ({"model.onnx": None, "rayfront.json": None}, ValueError, "is reserved"),
        ({"model.onnx": Path("/nonexistent/x.onnx")}, RepositoryError, "does not exist"),
    ],
    ids=["no-model-file", "escape", "reserved", "missing-source"],
)
def test_write_version_rejects_files_when_mapping_is_bad(
    repo_root: Path,
    onnx_file: Callable[..., Path],
    files: dict[str, Path | None],
    exc: type[Exception],
    message: str,
) -> None:
    src = onnx_file()
    mapping = {k: (v if v is not None else src) for k, v in files.items()}
    with pytest.raises(exc, match=message):
        write_version(repo_root, make_spec(), mapping, make_provenance())
    assert not repo_root.exists()
    assert staging_leftovers(repo_root) == []


def test_write_version_raises_naming_path_when_root_is_a_file(
    tmp_path: Path, onnx_file: Callable[..., Path]
) -> None:
    root = tmp_path / "repo"
    root.write_text("")
    with pytest.raises(RepositoryError, match=f"{root} is a file"):
        _write(root, onnx_file())


# --- atomicity ---------------------------------------------------------------------------


def _fail(*args: object, **kwargs: object) -> None:
    raise RepositoryError("injected failure")


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def _half_copy(src: Path, dst: Path) -> str:
    dst.write_bytes(src.read_bytes()[:10])
    raise OSError("no space left on device")


@pytest.mark.parametrize("existing", [0, 1, 2], ids=["new-repo", "new-model", "existing-model"])
@pytest.mark.parametrize(
    ("target", "replacement"),
    [
        ("copy_file_hashed", _half_copy),
        ("write_sidecar", _interrupt),
        ("_rename", _fail),
        ("_publish", _interrupt),
    ],
    ids=["mid-copy", "sidecar", "rename", "publish-interrupt"],
)
def test_write_version_leaves_repository_byte_identical_when_a_step_fails(
    repo_root: Path,
    onnx_file: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    existing: int,
    target: str,
    replacement: Callable[..., object],
) -> None:
    if existing >= 1:
        write_version(
            repo_root, make_spec(name="other"), {"model.onnx": onnx_file()}, make_provenance()
        )
    if existing == 2:
        _write(repo_root, onnx_file())
    before = tree_snapshot(repo_root)
    monkeypatch.setattr(writer, target, replacement)
    with pytest.raises((RepositoryError, OSError, KeyboardInterrupt)):
        _write(repo_root, onnx_file(), max_batch_size=4)
    assert tree_snapshot(repo_root) == before
    assert staging_leftovers(repo_root) == []


def test_write_version_takes_published_version_back_when_config_rewrite_fails(
    repo_root: Path, onnx_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(repo_root, onnx_file())
    before = tree_snapshot(repo_root)

    real_write = writer.atomic_write_text
    calls: list[Path] = []

    def broken_write(path: Path, text: str) -> None:
        if repo_root not in Path(path).parents:
            return real_write(path, text)  # staging outside the repository works
        calls.append(path)
        raise OSError("read-only file system")

    monkeypatch.setattr(writer, "atomic_write_text", broken_write)
    with pytest.raises(OSError, match="read-only file system"):
        # Different batching -> config.pbtxt must be rewritten after the version rename.
        _write(repo_root, onnx_file(), max_batch_size=4)
    assert calls == [repo_root / "m" / "config.pbtxt"]
    assert tree_snapshot(repo_root) == before
    assert staging_leftovers(repo_root) == []
