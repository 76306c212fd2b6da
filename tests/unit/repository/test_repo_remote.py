"""Remote repositories through fsspec: file:// and fsspec's in-memory file system."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec
import pytest
from typer.testing import CliRunner

from rayfront.errors import RepositoryError
from rayfront.repository.remote import STAMP, cache_dir_for, is_remote, pull


def _remote(root: Path) -> Path:
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "config.pbtxt").write_text('name: "m"\n')
    (root / "m" / "1" / "model.onnx").write_bytes(b"onnx-v1")
    (root / "m" / "1" / "rayfront.json").write_text("{}")
    return root


def test_pull_copies_versions_and_configs_when_repository_is_new(tmp_path):
    remote = _remote(tmp_path / "remote")
    local = tmp_path / "local"
    report = pull(f"file://{remote}", local)
    assert sorted(report["updated"]) == ["m/1", "m/config.pbtxt"]
    assert (local / "m" / "1" / "model.onnx").read_bytes() == b"onnx-v1"
    assert (local / "m" / "config.pbtxt").read_text() == 'name: "m"\n'
    assert json.loads((local / "m" / "1" / STAMP).read_text())["fingerprint"]


def test_pull_skips_unchanged_and_brings_new_and_changed_versions_when_pulled_again(tmp_path):
    remote = _remote(tmp_path / "remote")
    local = tmp_path / "local"
    pull(f"file://{remote}", local)
    (local / "m" / "rollout.json").write_text('{"canary": "state"}')  # the server's own
    (remote / "m" / "2").mkdir()
    (remote / "m" / "2" / "model.onnx").write_bytes(b"onnx-v2")
    (remote / "m" / "1" / "model.onnx").write_bytes(b"onnx-v1-fixed")
    (remote / "m" / "rollout.json").write_text("{}")  # never overwrites local state
    report = pull(f"file://{remote}", local)
    assert sorted(report["updated"]) == ["m/1", "m/2"]
    assert report["unchanged"] == ["m/config.pbtxt"]
    assert (local / "m" / "1" / "model.onnx").read_bytes() == b"onnx-v1-fixed"
    assert (local / "m" / "2" / "model.onnx").read_bytes() == b"onnx-v2"
    assert (local / "m" / "rollout.json").read_text() == '{"canary": "state"}'
    assert not [p for p in (local / "m").iterdir() if p.name.startswith(".")]  # no leftovers


def test_pull_leaves_the_local_version_as_it_was_when_a_download_fails(tmp_path, monkeypatch):
    remote = _remote(tmp_path / "remote")
    local = tmp_path / "local"
    pull(f"file://{remote}", local)
    (remote / "m" / "1" / "model.onnx").write_bytes(b"onnx-v1-new")
    real = fsspec.implementations.local.LocalFileSystem.get_file

    def flaky(self, src, dst, *args, **kwargs):
        if src.endswith("model.onnx"):
            raise OSError("connection reset")
        return real(self, src, dst, *args, **kwargs)

    monkeypatch.setattr(fsspec.implementations.local.LocalFileSystem, "get_file", flaky)
    with pytest.raises(OSError, match="connection reset"):
        pull(f"file://{remote}", local)
    assert (local / "m" / "1" / "model.onnx").read_bytes() == b"onnx-v1"
    assert sorted(p.name for p in (local / "m").iterdir()) == ["1", "config.pbtxt"]


def test_pull_reads_other_fsspec_protocols_when_given_their_url(tmp_path):
    mem = fsspec.filesystem("memory")
    mem.pipe("/rf-test-repo/m/config.pbtxt", b'name: "m"\n')
    mem.pipe("/rf-test-repo/m/1/model.onnx", b"in-memory")
    try:
        pull("memory://rf-test-repo", tmp_path / "local")
        assert (tmp_path / "local" / "m" / "1" / "model.onnx").read_bytes() == b"in-memory"
    finally:
        mem.rm("/rf-test-repo", recursive=True)


def test_pull_names_the_url_when_repository_is_missing(tmp_path):
    with pytest.raises(
        RepositoryError, match=r"repository file://.*nowhere is empty or does not exist"
    ):
        pull(f"file://{tmp_path / 'nowhere'}", tmp_path / "local")


def test_remote_refs_and_cache_dirs_are_stable_when_urls_repeat(tmp_path):
    assert is_remote("s3://bucket/models") and not is_remote("model_repository")
    assert cache_dir_for("s3://b/m/", tmp_path) == cache_dir_for("s3://b/m", tmp_path)
    assert cache_dir_for("s3://b/m", tmp_path) != cache_dir_for("gs://b/m", tmp_path)


def test_repo_pull_command_lists_what_it_did_when_run(tmp_path):
    from rayfront.cli import app

    remote = _remote(tmp_path / "remote")
    result = CliRunner().invoke(app, ["repo", "pull", f"file://{remote}", str(tmp_path / "l")])
    assert result.exit_code == 0, result.output
    assert "updated   m/1" in result.output
    shutil.rmtree(remote / "m")
    missing = CliRunner().invoke(app, ["repo", "pull", f"file://{remote}", str(tmp_path / "l")])
    assert missing.exit_code == 1 and "is empty or does not exist" in missing.output
