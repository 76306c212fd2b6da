"""Provenance sidecar, atomic file writes and the read-only repository layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from repo_helpers import make_provenance, make_spec

from rayfront.errors import InvalidArgumentError, NotFoundError, RepositoryError
from rayfront.repository._fs import atomic_write_bytes
from rayfront.repository.layout import Repository, apply_version_policy
from rayfront.repository.pbtxt import render_config
from rayfront.repository.sidecar import (
    SIDECAR_NAME,
    TensorRTStamp,
    read_sidecar,
    write_sidecar,
)
from rayfront.spec import VersionPolicy

# --- sidecar -----------------------------------------------------------------------------


def test_sidecar_round_trips_when_written_and_read(tmp_path: Path) -> None:
    stamp = TensorRTStamp(
        tensorrt_version="10.3.0.26",
        compute_capability="9.0",
        gpu_name="NVIDIA H100",
        fp16=True,
        profiles={"x": {"min": [1, 3], "opt": [8, 3], "max": [32, 3]}},
    )
    prov = make_provenance(tensorrt=stamp, files={"model.plan": "ab" * 32}, extra={"k": [1, 2]})
    path = write_sidecar(tmp_path, prov)
    assert path == tmp_path / SIDECAR_NAME
    assert read_sidecar(tmp_path) == prov
    assert prov.max_abs_err == pytest.approx(2e-7)
    assert prov.parity_passed


def test_read_sidecar_returns_none_when_version_has_no_sidecar(tmp_path: Path) -> None:
    assert read_sidecar(tmp_path) is None


def test_read_sidecar_names_file_and_field_when_sidecar_is_malformed(tmp_path: Path) -> None:
    (tmp_path / SIDECAR_NAME).write_text('{"source": "s", "exporter": "magic"}')
    with pytest.raises(
        RepositoryError, match=rf"{SIDECAR_NAME}: invalid provenance sidecar: .*more\)"
    ):
        read_sidecar(tmp_path)


def test_read_sidecar_fails_when_json_is_truncated(tmp_path: Path) -> None:
    (tmp_path / SIDECAR_NAME).write_text('{"source": ')
    with pytest.raises(RepositoryError, match="invalid provenance sidecar"):
        read_sidecar(tmp_path)


def test_provenance_rejects_unknown_fields_when_extra_is_forbidden() -> None:
    with pytest.raises(ValidationError, match="surprise"):
        make_provenance(surprise=1)


def test_tensorrt_stamp_rejects_compute_capability_when_not_major_dot_minor() -> None:
    with pytest.raises(ValidationError, match="compute_capability"):
        TensorRTStamp(tensorrt_version="10.0", compute_capability="sm_90", gpu_name="g", fp16=False)


# --- atomic writes -------------------------------------------------------------------------


def test_atomic_write_bytes_replaces_content_and_keeps_mode_when_file_exists(
    tmp_path: Path,
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_bytes_leaves_old_file_and_no_temp_when_replace_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def boom(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr("rayfront.repository._fs.os.replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_bytes_creates_world_readable_file_when_new(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "new.txt", b"x")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644


def test_atomic_write_bytes_raises_type_error_when_given_text(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        atomic_write_bytes(tmp_path / "x", "text")  # type: ignore[arg-type]


# --- layout ------------------------------------------------------------------------------


def _model(root: Path, name: str, versions: list[str], config: bool = True, **spec: object) -> None:
    d = root / name
    d.mkdir(parents=True)
    if config:
        (d / "config.pbtxt").write_text(render_config(make_spec(name=name, **spec)))
    for v in versions:
        (d / v).mkdir()


def test_repository_raises_naming_path_when_root_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "repo.txt"
    f.write_text("")
    with pytest.raises(RepositoryError, match=rf"model repository {f} is a file"):
        Repository(f)


def test_repository_require_raises_when_root_is_missing(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "absent")
    assert repo.models() == []
    with pytest.raises(RepositoryError, match="absent does not exist"):
        repo.require()


def test_models_lists_only_model_folders_when_repository_has_clutter(tmp_path: Path) -> None:
    _model(tmp_path, "b", ["1"])
    _model(tmp_path, "a", [], config=True)
    _model(tmp_path, "versions_only", ["2"], config=False)
    _model(tmp_path, "docs", ["img"], config=False)  # no config, no numeric folder
    _model(tmp_path, ".staging", ["1"])  # hidden
    (tmp_path / "README.md").write_text("")
    assert Repository(tmp_path).models() == ["a", "b", "versions_only"]


def test_versions_ignores_names_triton_ignores_when_listing(tmp_path: Path) -> None:
    _model(tmp_path, "m", ["1", "10", "2", "0", "01", "v3", ".4"])
    (tmp_path / "m" / "7").write_text("a file, not a version")
    repo = Repository(tmp_path)
    assert repo.versions("m") == [1, 2, 10]
    assert repo.next_version("m") == 11
    assert repo.next_version("new") == 1


def test_versions_raises_not_found_when_model_is_absent(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="model 'ghost' is not in repository"):
        Repository(tmp_path).versions("ghost")


def test_model_dir_rejects_name_when_it_is_a_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"invalid model name '\.\./x'"):
        Repository(tmp_path).model_dir("../x")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy(), [5]),
        (VersionPolicy(kind="latest", num_versions=2), [3, 5]),
        (VersionPolicy(kind="all"), [1, 3, 5]),
        (VersionPolicy(kind="specific", versions=(1, 4)), [1]),
    ],
    ids=["default", "latest-2", "all", "specific"],
)
def test_served_versions_applies_policy_when_versions_exist(
    tmp_path: Path, policy: VersionPolicy, expected: list[int]
) -> None:
    _model(tmp_path, "m", ["1", "3", "5"], version_policy=policy)
    repo = Repository(tmp_path)
    assert repo.served_versions("m") == expected
    assert repo.spec("m").version_policy == policy


def test_apply_version_policy_returns_empty_when_no_versions() -> None:
    assert apply_version_policy(VersionPolicy(), []) == []


def test_sidecar_reads_through_repository_when_present(tmp_path: Path) -> None:
    _model(tmp_path, "m", ["1"])
    write_sidecar(tmp_path / "m" / "1", make_provenance())
    repo = Repository(tmp_path)
    assert repo.sidecar("m", 1) == make_provenance()
    with pytest.raises(InvalidArgumentError, match="version 0 of model 'm'"):
        repo.sidecar("m", 0)


def test_sidecar_round_trips_when_parity_errors_are_inf_or_nan(tmp_path: Path) -> None:
    prov = make_provenance(passed=False)
    prov.parity[0] = prov.parity[0].model_copy(
        update={"max_abs_err": float("inf"), "max_rel_err": float("nan")}
    )
    write_sidecar(tmp_path, prov)
    back = read_sidecar(tmp_path)
    assert back is not None
    assert back.parity[0].max_abs_err == float("inf")
    assert back.parity[0].max_rel_err != back.parity[0].max_rel_err  # NaN
