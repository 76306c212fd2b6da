"""CanaryStore: where documents live, atomic writes, loud failures on bad input."""

from __future__ import annotations

import pytest

from rayfront.canary.state import ModelTraffic, TrafficPolicy
from rayfront.canary.store import CanaryStore
from rayfront.errors import NotFoundError, RepositoryError

MODEL = "digits"


def _doc(weights):
    return ModelTraffic(model=MODEL, policy=TrafficPolicy(weights=weights))


def test_store_saves_next_to_model_and_loads_back_when_round_tripped(repo):
    store = CanaryStore(repo)
    assert store.load(MODEL) is None
    path = store.save(_doc({"1": 90, "2": 10}))
    assert path == repo / MODEL / "rollout.json"
    loaded = store.load(MODEL)
    assert loaded is not None and loaded.policy.weights == {"1": 90, "2": 10}
    assert store.models() == [MODEL]


def test_store_leaves_no_temp_files_when_writing_repeatedly(repo):
    store = CanaryStore(repo)
    before = sorted(p.name for p in (repo / MODEL).iterdir())
    for i in range(20):
        store.save(_doc({"1": 100 - i, "2": i}))
    after = sorted(p.name for p in (repo / MODEL).iterdir())
    assert after == sorted([*before, "rollout.json"])
    assert store.load(MODEL).policy.weights == {"1": 81, "2": 19}


def test_store_keeps_old_document_when_write_fails(repo, monkeypatch):
    store = CanaryStore(repo)
    store.save(_doc({"1": 100}))
    import rayfront.canary.store as store_mod

    def boom(path, data):
        raise OSError("no space left on device")

    monkeypatch.setattr(store_mod, "atomic_write_bytes", boom)
    with pytest.raises(OSError, match="no space left"):
        store.save(_doc({"2": 100}))
    assert store.load(MODEL).policy.weights == {"1": 100}


def test_store_raises_not_found_when_model_unknown(repo):
    store = CanaryStore(repo)
    with pytest.raises(NotFoundError, match="model 'ghost' not found in repository"):
        store.load("ghost")
    with pytest.raises(NotFoundError, match="not a valid model name"):
        store.save(ModelTraffic(model="..", policy=TrafficPolicy(weights={"1": 100})))
    with pytest.raises(NotFoundError, match="not a valid model name"):
        store.load("../etc")


def test_store_raises_repository_error_when_file_is_corrupt(repo):
    (repo / MODEL / "rollout.json").write_text('{"model": "digits"}')
    with pytest.raises(RepositoryError, match=r"canary state .* of model 'digits' is unreadable"):
        CanaryStore(repo).load(MODEL)


def test_store_uses_state_dir_when_given(repo, tmp_path):
    state_dir = tmp_path / "state"
    store = CanaryStore(repo, state_dir=state_dir)
    assert store.save(_doc({"1": 100})) == state_dir / "digits.rollout.json"
    assert not (repo / MODEL / "rollout.json").exists()
    assert store.models() == [MODEL]
    assert store.load(MODEL).policy.weights == {"1": 100}


def test_store_refuses_repository_when_not_a_directory(tmp_path):
    with pytest.raises(NotFoundError, match="is not a directory"):
        CanaryStore(tmp_path / "missing")
