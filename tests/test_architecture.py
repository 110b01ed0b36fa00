"""The layering of docs/architecture.md, read from the code's own imports: no import runs back up a
layer and no two modules import each other (directly or around a longer circle), lazy imports
inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

ROOTS = (REPO / "platform", REPO / "analysis")
#: Bottom-up; a module may import only its own layer and those below it.
LAYERS = ("shared", "core", "analysis", "tracking", "sweeps", "cli")
SHARED = {"focustune", "focustune.tracking_schema", "focustune.files", "focustune.text_table", "focustune.errors",
          "focustune.yaml_files", "focustune.registry", "focustune.params", "focustune.records", "focustune.network",
          "focustune.metric_table", "focustune.objectives", "focustune.credentials"}


def layer_of(module: str) -> str:
    if module in SHARED:
        return "shared"
    for prefix, layer in (("focustune.cli", "cli"), ("focustune.sweeps", "sweeps"), ("focustune.tracking", "tracking"),
                          ("focustune_analysis", "analysis")):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return "core"


def project_modules() -> dict[str, Path]:
    modules = {}
    for root in ROOTS:
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to (its longest prefix that is a module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(module: str, path: Path) -> set[str]:
    """Every module name imported anywhere in ``path`` (top level and inside functions), absolute."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found.update(names)
    return found


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in ``path`` (top level and inside functions)."""
    return {target for name in imported_names(module, path)
            if (target := _target(name, modules)) and target != module}


def importers_of(library: str) -> set[str]:
    """Project modules that import ``library`` (or one of its submodules) anywhere."""
    return {module for module, path in project_modules().items()
            if any(name == library or name.startswith(library + ".") for name in imported_names(module, path))}


def reachable_from(module: str, graph: dict[str, set[str]], skip: frozenset[str] = frozenset()) -> set[str]:
    """Every project module ``module`` imports, directly or through others (not through ``skip``)."""
    seen, todo = set(), [module]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen and nxt not in skip:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def test_no_import_runs_back_up_a_layer(graph):
    upward = sorted(f"{a} ({layer_of(a)}) -> {b} ({layer_of(b)})" for a, targets in graph.items() for b in targets
                    if LAYERS.index(layer_of(b)) > LAYERS.index(layer_of(a)))
    assert upward == []


def test_no_import_cycle(graph):
    # a package's __init__ that re-exports its own submodules is not a circle of two rooms
    edges = {a: {b for b in targets if not a.startswith(b + ".")} for a, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert circles == []


def test_the_checks_see_a_violation():
    """The two rules above would catch an upward import and a circle (guards against a blind scan)."""
    assert LAYERS.index(layer_of("focustune.sweeps.runner")) > LAYERS.index(layer_of("focustune_analysis.report"))
    assert layer_of("focustune.training.loop") == "core" and layer_of("focustune.cli") == "cli"
    modules = project_modules()
    assert "focustune.training" in modules and "focustune_analysis" in modules
    assert _target("focustune.tracking_schema.ui_hint", modules) == "focustune.tracking_schema"


def test_mlflow_is_imported_by_tracking_and_by_the_analysis_reader_only():
    importers = importers_of("mlflow")
    assert {m for m in importers if layer_of(m) not in ("tracking", "analysis")} == set()
    assert {m for m in importers if layer_of(m) == "analysis"} <= {"focustune_analysis.collect"}
    assert "focustune.tracking.model_package" in importers  # the scan sees an importer


def test_ray_is_imported_by_the_tuning_layer_only():
    importers = importers_of("ray")
    assert {m for m in importers if layer_of(m) != "sweeps"} == set()
    assert "focustune.sweeps.tune_tracking" in importers


def test_train_and_predict_never_reach_the_tuning_layer(graph):
    """Not through any import of theirs, lazy ones included (the command table, ``focustune.cli``,
    imports every command module; a command's handler imports what it needs itself)."""
    table = frozenset({"focustune.cli"})
    for command in ("focustune.cli.train", "focustune.cli.predict"):
        assert {m for m in reachable_from(command, graph, table) if layer_of(m) == "sweeps"} == set(), command
    assert any(layer_of(m) == "tracking" for m in reachable_from("focustune.cli.train", graph, table))
    assert any(layer_of(m) == "sweeps" for m in reachable_from("focustune.cli.sweep", graph, table))


PROBE = """
import runpy, sys
sys.argv = ["focustune", *sys.argv[1:]]
try:
    runpy.run_module("focustune.cli", run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
print(sorted({m.split(".")[0] for m in sys.modules} & {"ray", "optuna", "mlflow"}),
      sorted(m for m in sys.modules if m.startswith("focustune.sweeps")))
"""


def test_a_train_run_as_a_user_runs_it_loads_no_tuning_layer(tmp_path):
    """``focustune train`` (the CLI, with everything it imports) loads neither the tuning layer nor Ray."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PROBE, "train", "--method", "erm", "--dataset", "digits-lt",
                           "--epochs", "1", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[] []"
