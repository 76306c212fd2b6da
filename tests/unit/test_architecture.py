"""The house rules, as tests: where Ray may be imported, no import cycles, packages listed.

An import graph is read from the source with ``ast`` (module-level and function-level
imports alike; imports under ``if TYPE_CHECKING:`` are type hints, not imports).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Installed package name -> source folder (the fixed top-level layout).
FOLDERS = {"rayfront.benchmarks": "benchmarks", "rayfront.export": "export", "rayfront": "serve"}
DEPLOY = "rayfront.deploy"
#: The shell: the only core modules that may import the export and benchmark packages.
SHELL = {"rayfront.cli", "rayfront.demo"}
#: Outside the deploy wing, only the plain-Ray-Serve baseline may import ray: it is the
#: thing rayfront is measured against, run in its own subprocess.
RAY_ALLOWED_OUTSIDE_DEPLOY = {"rayfront.benchmarks.targets.serve_plain"}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            if "reports" in path.parts:
                continue
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts]) if parts else package
            if name.startswith("rayfront.") and package == "rayfront":
                head = name.split(".")[1]
                if head in ("export", "benchmarks"):
                    continue  # those names belong to the other folders
            out[name] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute dotted names), type-checking blocks excluded."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            for alias in node.names:
                # `from pkg import sub` imports the submodule `pkg.sub` when there is one.
                if f"{module}.{alias.name}" in MODULES:
                    found.add(f"{module}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _internal_edges(name: str) -> set[str]:
    # A package's own __init__ is docstring-only here, so importing `a.b.c` is an edge to
    # `a.b.c` alone, not to `a` and `a.b`.
    return {dep for dep in GRAPH[name] if dep in MODULES and dep != name}


def test_no_module_outside_deploy_imports_ray_when_source_is_read():
    offenders = {
        name: sorted(d for d in deps if d == "ray" or d.startswith("ray."))
        for name, deps in GRAPH.items()
        if not (name == DEPLOY or name.startswith(DEPLOY + "."))
        and name not in RAY_ALLOWED_OUTSIDE_DEPLOY
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}, f"only {DEPLOY} may import ray; found {offenders}"


def test_every_module_outside_deploy_imports_when_ray_is_blocked():
    names = sorted(
        n
        for n in MODULES
        if not (n == DEPLOY or n.startswith(DEPLOY + "."))
        and n not in RAY_ALLOWED_OUTSIDE_DEPLOY
        and n != "rayfront.benchmarks.load.locustfile"  # gevent monkey-patches on import
        and not n.endswith(".__main__")  # running them is their whole point
    )
    script = (
        "import importlib, sys\n"
        "sys.modules['ray'] = None\n"
        f"names = {names!r}\n"
        "bad = []\n"
        "for n in names:\n"
        "    try:\n"
        "        importlib.import_module(n)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{n}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, cwd=ROOT
    )
    assert proc.returncode == 0, (
        f"modules that need ray outside deploy/:\n{proc.stdout}{proc.stderr}"
    )


def test_locust_users_import_when_ray_is_blocked():
    script = (
        "import sys; sys.modules['ray'] = None\n"
        "import rayfront.benchmarks.load.locustfile as m\n"
        "print(m.__name__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr


def _cycle() -> list[str] | None:
    """One import cycle among rayfront modules, or None (iterative DFS, three colours)."""
    colour: dict[str, int] = {}
    for start in sorted(MODULES):
        if colour.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(_internal_edges(start)))]
        path = [start]
        colour[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            dep = todo.pop()
            state = colour.get(dep, 0)
            if state == 1:
                return [*path[path.index(dep) :], dep]
            if state == 0:
                colour[dep] = 1
                stack.append((dep, sorted(_internal_edges(dep))))
                path.append(dep)
    return None


def test_import_graph_has_no_cycle_when_walked():
    assert _cycle() is None, f"import cycle: {' -> '.join(_cycle() or [])}"


def test_only_the_shell_imports_export_and_benchmarks_when_core_is_read():
    core = [n for n in MODULES if not n.startswith(("rayfront.export", "rayfront.benchmarks"))]
    offenders = {
        n: sorted(d for d in GRAPH[n] if d.startswith(("rayfront.export", "rayfront.benchmarks")))
        for n in core
        if n not in SHELL
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}, f"only {sorted(SHELL)} may import export/benchmarks: {offenders}"


def test_every_package_folder_is_listed_when_pyproject_is_read():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    packages = {n for n, p in MODULES.items() if p.name == "__init__.py"}
    assert packages - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - packages == set(), "these listed packages have no folder"


def test_no_two_modules_share_a_basename_when_tree_is_read():
    names = Counter(
        p.stem for p in MODULES.values() if p.name not in ("__init__.py", "__main__.py")
    )
    twins = sorted(n for n, c in names.items() if c > 1)
    assert twins == [], f"modules sharing a basename: {twins}"


def test_no_two_test_modules_share_a_basename_when_tests_are_read():
    # The test folders are not packages: pytest imports each test module by its basename,
    # so twins in unit/ and integration/ fail collection on a fresh checkout.
    names = Counter(p.name for p in (ROOT / "tests").rglob("*.py") if p.name != "conftest.py")
    twins = sorted(n for n, c in names.items() if c > 1 and n != "__init__.py")
    assert twins == [], f"test modules sharing a basename: {twins}"


@pytest.mark.parametrize("module", ["rayfront.deploy.autoscaling"])
def test_autoscaling_policy_imports_nothing_from_rayfront_when_pickled_by_value(module):
    # Serve cloudpickles the policy into its controller, which may not have rayfront.
    assert not {d for d in GRAPH[module] if d.startswith("rayfront")}
