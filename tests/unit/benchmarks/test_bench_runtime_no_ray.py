"""The runtime-level targets (raw, batcher) run end to end where Ray cannot be imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench_helpers import tiny_mlp_repo

from rayfront.benchmarks.analysis.results import load_json

# Poisoning sys.modules makes every `import ray` raise ImportError, as on a host without Ray.
_SCRIPT = """
import sys
sys.modules["ray"] = None
from rayfront.benchmarks.run.bench_cli import app
app(sys.argv[1:], prog_name="bench")
"""


def test_sweep_measures_raw_and_batcher_when_ray_is_not_importable(tmp_path: Path) -> None:
    repo = tiny_mlp_repo(tmp_path / "repo")
    out = tmp_path / "out"
    args = [
        "run", "--quick", "--no-progress", "--targets", "raw,batcher", "--repository", str(repo),
        "--concurrency", "1,2", "--duration", "200ms", "--warmup", "50ms", "--raw-batches", "1,4",
        "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlp = load_json(out).model("mlp")
    assert mlp is not None
    assert mlp.raw_status == "ok" and [r.batch_size for r in mlp.raw] == [1, 4]
    assert {(t.target, t.batching, t.status) for t in mlp.targets} == {
        ("batcher", "off", "ok"),
        ("batcher", "32:1000", "ok"),
    }, [t.reason for t in mlp.targets]
    for t in mlp.targets:
        assert [p.concurrency for p in t.points] == [1, 2]
        assert all(p.requests > 0 and p.errors == 0 for p in t.points)
    assert (out / "summary.md").is_file()
