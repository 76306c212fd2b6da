"""Load the PyTorch model that ``rayfront export`` is asked to export.

A model reference is one of:

* ``package.module:factory`` - imported; ``factory`` is called with no arguments and must
  return an ``nn.Module`` (an ``nn.Module`` attribute is used as is);
* ``path/to/file.py:factory`` - the file is imported as a module, then as above;
* ``model.pt`` / ``model.ts`` - a saved TorchScript archive (``torch.jit.load``);
* ``model.pt2`` - a saved ``torch.export`` program (``torch.export.load``).

A factory's module may define ``RAYFRONT_INPUT_GENERATORS: dict[str, InputGenerator]``
(see :mod:`rayfront.export.parity`) so the parity check feeds valid values, e.g. token ids
below the vocabulary size; a returned module may carry a ``rayfront_provenance`` dict (e.g.
its test accuracy), which lands in the version's sidecar ``extra``. Every failure is a :class:`~rayfront.errors.ModelLoadError` with a
one-line message; the model comes back in eval mode.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from rayfront.errors import ModelLoadError

logger = logging.getLogger(__name__)

GENERATORS_ATTR = "RAYFRONT_INPUT_GENERATORS"
PROVENANCE_ATTR = "rayfront_provenance"
_TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".pth", ".jit")
_EXPORTED_PROGRAM_SUFFIXES = (".pt2",)


@dataclass
class LoadedModel:
    """A model ready to export, plus what is known about where it came from."""

    module: Any  # torch.nn.Module; typed loosely so this module imports without torch
    ref: str
    kind: str  # "factory" | "torchscript" | "exported_program"
    input_generators: dict[str, Any] = field(default_factory=dict)
    provenance_extra: dict[str, Any] = field(default_factory=dict)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _split_ref(ref: str) -> tuple[str, str]:
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise ModelLoadError(
            f"model reference {ref!r}: expected package.module:factory, path/to/file.py:factory, "
            "or a .pt/.ts TorchScript or .pt2 torch.export file"
        )
    return target, attr


def _import_file(path: Path, ref: str) -> ModuleType:
    if not path.is_file():
        raise ModelLoadError(f"model reference {ref!r}: file {path} does not exist")
    # A stable, unique module name lets the file's own pickling/imports find itself.
    mod_name = f"rayfront_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"model reference {ref!r}: cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # user code: any failure is a load failure, reported in one line
        sys.modules.pop(mod_name, None)
        raise ModelLoadError(
            f"model reference {ref!r}: importing {path} failed: {_one_line(err)}"
        ) from err
    return module


def _import_module(name: str, ref: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ModelLoadError(
            f"model reference {ref!r}: cannot import module {name!r} ({_one_line(err)}); "
            "is the package installed and the name spelled right?"
        ) from err
    except Exception as err:  # user code raised while importing
        raise ModelLoadError(
            f"model reference {ref!r}: importing module {name!r} failed: {_one_line(err)}"
        ) from err


def _set_eval(module: Any) -> Any:
    try:
        module.eval()
    except NotImplementedError:
        # torch.export'ed GraphModules refuse .eval(): their graph was captured in the
        # mode the model was in at export time (dropout and batch-norm are baked in).
        logger.info("exported program keeps its export-time train/eval mode")
    return module


def _from_factory(ref: str) -> LoadedModel:
    import torch

    target, attr = _split_ref(ref)
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(Path(target), ref)
    else:
        module = _import_module(target, ref)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ModelLoadError(
            f"model reference {ref!r}: module {target!r} has no attribute {attr!r}"
        ) from None
    if isinstance(obj, torch.nn.Module):
        model = obj
    elif callable(obj):
        try:
            model = obj()
        except Exception as err:  # user factory: report, don't crash with its traceback
            raise ModelLoadError(
                f"model reference {ref!r}: factory {attr!r} raised {_one_line(err)}"
            ) from err
    else:
        raise ModelLoadError(
            f"model reference {ref!r}: {attr!r} is a {type(obj).__name__}, expected a "
            "callable returning torch.nn.Module"
        )
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(
            f"model reference {ref!r}: factory {attr!r} returned {type(model).__name__}, "
            "expected torch.nn.Module"
        )
    generators = getattr(module, GENERATORS_ATTR, None) or {}
    if not isinstance(generators, dict):
        raise ModelLoadError(
            f"model reference {ref!r}: {GENERATORS_ATTR} must be a dict of input name -> "
            f"generator, got {type(generators).__name__}"
        )
    extra = getattr(model, PROVENANCE_ATTR, None) or {}
    return LoadedModel(_set_eval(model), ref, "factory", dict(generators), dict(extra))


def _from_file(path: Path, ref: str) -> LoadedModel:
    import torch

    if not path.is_file():
        raise ModelLoadError(f"model file {ref!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in _EXPORTED_PROGRAM_SUFFIXES:
        try:
            program = torch.export.load(str(path))
        except Exception as err:  # corrupt or foreign archive
            raise ModelLoadError(
                f"model file {ref!r} is not a loadable torch.export program: {_one_line(err)}"
            ) from err
        return LoadedModel(_set_eval(program.module()), ref, "exported_program")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what we load
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # not a TorchScript zip, or saved with torch.save
        raise ModelLoadError(
            f"model file {ref!r} is not a TorchScript archive ({_one_line(err)}); save it with "
            "torch.jit.save, or pass package.module:factory"
        ) from err
    return LoadedModel(_set_eval(module), ref, "torchscript")


def load_model(ref: str) -> LoadedModel:
    """Resolve ``ref`` into an eval-mode ``nn.Module``; :class:`ModelLoadError` on any failure."""
    ref = ref.strip()
    if not ref:
        raise ModelLoadError("model reference is empty; expected package.module:factory")
    path = Path(ref)
    if path.suffix.lower() in _TORCHSCRIPT_SUFFIXES + _EXPORTED_PROGRAM_SUFFIXES:
        loaded = _from_file(path, ref)
    else:
        # Factories print or warn freely; keep that off stdout, which the CLI reserves
        # for the resulting version path.
        with contextlib.redirect_stdout(sys.stderr):
            loaded = _from_factory(ref)
    logger.info("loaded %s model %s (%s)", loaded.kind, ref, type(loaded.module).__name__)
    return loaded
