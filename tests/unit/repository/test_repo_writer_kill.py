"""A writer killed with SIGKILL at any point leaves the repository exactly as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from repo_helpers import make_provenance, make_spec, staging_leftovers, tree_snapshot

from rayfront.repository.layout import Repository
from rayfront.repository.writer import write_version

# Runs write_version in a child that parks itself at the chosen step, so the parent can
# SIGKILL it there. The pause replaces the step (copy) or runs just before it (publish).
_CHILD = r"""
import sys, time
from pathlib import Path

sys.path.insert(0, sys.argv[5])
from repo_helpers import make_provenance, make_spec
from rayfront.repository import writer

root, src, marker, point = sys.argv[1:5]

def pause():
    Path(marker).write_text("parked")
    time.sleep(120)

if point == "copy":
    def parked_copy(s, d):
        with open(d, "wb") as fh:
            fh.write(b"half a model")
        pause()
    writer.copy_file_hashed = parked_copy
elif point == "publish":
    real_rename = writer._rename
    def parked_rename(s, d):
        pause()
        return real_rename(s, d)
    writer._rename = parked_rename

writer.write_version(
    Path(root), make_spec(max_batch_size=4), {"model.onnx": Path(src)}, make_provenance()
)
"""


def _kill_child_at(point: str, root: Path, src: Path, tmp_path: Path) -> None:
    marker = tmp_path / f"parked-{point}"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(root),
            str(src),
            str(marker),
            point,
            str(Path(__file__).parent),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if child.poll() is not None:
                _, err = child.communicate()
                pytest.fail(f"child exited before parking at {point!r}: {err.decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"child never reached {point!r}")
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    ("point", "existing_versions"),
    [("copy", 2), ("publish", 0), ("publish", 2)],
    ids=["mid-copy-existing-model", "before-rename-new-repo", "before-rename-existing-model"],
)
def test_write_version_leaves_repository_unchanged_when_writer_is_sigkilled(
    repo_root: Path,
    tmp_path: Path,
    onnx_file: Callable[..., Path],
    point: str,
    existing_versions: int,
) -> None:
    for _ in range(existing_versions):
        write_version(repo_root, make_spec(), {"model.onnx": onnx_file()}, make_provenance())
    before = tree_snapshot(repo_root)

    _kill_child_at(point, repo_root, onnx_file(), tmp_path)

    assert tree_snapshot(repo_root) == before
    # The killed writer's staging folder is outside the repository tree...
    leftovers = staging_leftovers(repo_root)
    assert len(leftovers) == 1
    # ...and the next writer is unaffected by it and takes the next number.
    vdir = write_version(repo_root, make_spec(), {"model.onnx": onnx_file()}, make_provenance())
    assert vdir.name == str(existing_versions + 1)
    assert Repository(repo_root).versions("m") == list(range(1, existing_versions + 2))


def test_write_version_sweeps_staging_of_killed_writers_when_older_than_a_day(
    repo_root: Path, onnx_file: Callable[..., Path]
) -> None:
    stale = repo_root.parent / ".model_repository.staging-dead"
    fresh = repo_root.parent / ".model_repository.staging-alive"
    for d in (stale, fresh):
        (d / "m" / "1").mkdir(parents=True)
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    write_version(repo_root, make_spec(), {"model.onnx": onnx_file()}, make_provenance())
    assert staging_leftovers(repo_root) == [fresh.name]
