"""Model references: modules, files, TorchScript and torch.export archives, and every failure."""

from __future__ import annotations

import textwrap

import pytest
import torch

from rayfront.errors import ModelLoadError
from rayfront.export.loader import load_model


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "user_models.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch

            RAYFRONT_INPUT_GENERATORS = {"x": lambda kind, shape, rng: rng.random(shape)}

            def good():
                m = torch.nn.Linear(4, 2)
                m.train()
                m.rayfront_provenance = {"accuracy": 0.5}
                return m

            def raises():
                raise ValueError("checkpoint not found")

            def returns_int():
                return 3

            instance = torch.nn.ReLU()
            constant = 7
            """
        )
    )
    return path


def test_load_model_calls_factory_and_sets_eval_when_ref_is_module_path():
    loaded = load_model("rayfront.export.demos.multi:factory")
    assert isinstance(loaded.module, torch.nn.Module)
    assert not loaded.module.training
    assert loaded.kind == "factory"


def test_load_model_imports_file_and_reads_generators_when_ref_is_py_file(model_file):
    loaded = load_model(f"{model_file}:good")
    assert not loaded.module.training
    assert set(loaded.input_generators) == {"x"}
    assert loaded.provenance_extra == {"accuracy": 0.5}


def test_load_model_uses_module_attribute_when_it_is_already_a_module(model_file):
    assert isinstance(load_model(f"{model_file}:instance").module, torch.nn.ReLU)


def test_load_model_loads_torchscript_when_ref_is_pt_file(tmp_path):
    path = tmp_path / "m.pt"
    torch.jit.script(torch.nn.Linear(3, 1)).save(str(path))
    loaded = load_model(str(path))
    assert loaded.kind == "torchscript"
    assert loaded.module(torch.ones(2, 3)).shape == (2, 1)


def test_load_model_loads_exported_program_when_ref_is_pt2_file(tmp_path):
    path = tmp_path / "m.pt2"
    program = torch.export.export(torch.nn.Linear(3, 1), (torch.ones(2, 3),))
    torch.export.save(program, str(path))
    loaded = load_model(str(path))
    assert loaded.kind == "exported_program"
    assert loaded.module(torch.ones(2, 3)).shape == (2, 1)


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ("", "model reference is empty"),
        ("no_colon_here", "expected package.module:factory"),
        ("rayfront_no_such_pkg.mod:factory", "cannot import module 'rayfront_no_such_pkg.mod'"),
        (
            "rayfront.export.demos.multi:nope",
            "module 'rayfront.export.demos.multi' has no attribute 'nope'",
        ),
        ("/nonexistent/dir/model.py:factory", "file /nonexistent/dir/model.py does not exist"),
        ("/nonexistent/model.pt", "model file '/nonexistent/model.pt' does not exist"),
    ],
)
def test_load_model_raises_model_load_error_when_ref_cannot_resolve(ref, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model(ref)


def test_load_model_reports_factory_exception_in_one_line_when_factory_raises(model_file):
    with pytest.raises(
        ModelLoadError, match="factory 'raises' raised ValueError: checkpoint not found"
    ):
        load_model(f"{model_file}:raises")


def test_load_model_raises_when_factory_returns_non_module(model_file):
    with pytest.raises(ModelLoadError, match=r"returned int, expected torch\.nn\.Module"):
        load_model(f"{model_file}:returns_int")


def test_load_model_raises_when_attribute_is_not_callable(model_file):
    with pytest.raises(ModelLoadError, match="'constant' is a int, expected a callable"):
        load_model(f"{model_file}:constant")


def test_load_model_raises_when_file_fails_to_import(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import rayfront_definitely_missing_module\n")
    with pytest.raises(ModelLoadError, match=r"importing .*broken\.py failed: ModuleNotFoundError"):
        load_model(f"{bad}:factory")


def test_load_model_raises_when_pt_file_is_not_torchscript(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(ModelLoadError, match="is not a TorchScript archive"):
        load_model(str(path))
