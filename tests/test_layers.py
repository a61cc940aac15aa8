"""The package's imports flow one way: each module imports only its own layer and the layers below it.

Layers, bottom to top (a module belongs to the first prefix that names it):

    base      types, config, builtins (the plugin registry), numerics, machine
    parts     prompts, judges, models, algos, metrics, pairing, buffer, curriculum, guard, intervals, sizing, ...
    plugins   rayunify.shapes (ShapesWorld): may use base and parts; nothing outside it imports it
    runtime   actors, launch
    driver    driver, dryrun, eval_job
    commands  cli, train

Every import statement counts: module-level, inside functions and under `if TYPE_CHECKING`. A function-level
import defers the cost of a dependency, not the dependency itself (a change to the imported module can still
break the importer), and a type-only import still means the importer knows the higher layer's classes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rayunify"
PLUGIN = "rayunify.shapes"
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("rayunify.types", "rayunify.config", "rayunify.builtins", "rayunify.numerics", "rayunify.machine")),
    (
        "parts",
        (
            "rayunify.prompts", "rayunify.judges", "rayunify.models", "rayunify.algos", "rayunify.metrics",
            "rayunify.pairing", "rayunify.buffer", "rayunify.curriculum", "rayunify.guard", "rayunify.intervals",
            "rayunify.sizing", "rayunify.batching", "rayunify.rewards", "rayunify.evaluation",
            "rayunify.training_data", "rayunify.export", "rayunify.report", "rayunify.weights",
            "rayunify.checkpoints", "rayunify.procs", "rayunify.runlog", "rayunify.preflight",
            "rayunify.health", "rayunify.prompt_files", "rayunify.levels", "rayunify.records", "rayunify.power",
            "rayunify.divergence", "rayunify.manifest", "rayunify.runlock",
        ),
    ),  # fmt: skip
    ("plugins", (PLUGIN,)),
    ("runtime", ("rayunify.actors", "rayunify.launch")),
    ("driver", ("rayunify.driver", "rayunify.dryrun", "rayunify.eval_job")),
    ("commands", ("rayunify.cli", "rayunify.train")),
]
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layers.py")


def imports_of(path: Path) -> set[str]:
    """Every rayunify module `path` imports, wherever the statement stands."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))
    return {name for name in found if name.startswith("rayunify.") and name != module}  # the root is empty


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative / "__init__.py").is_file()


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "__init__.py"}
GRAPH = {module: imports_of(path) for module, path in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_never_reach_up_a_layer():
    upward = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if RANK[layer_of(target)] > RANK[layer_of(module)]
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_core_module_imports_the_plugin():
    """ShapesWorld is a plugin: the core reaches it through the registry, never by an import, and names it
    only in the registry's list of shipped plugins (as a string, loaded on the first look-up)."""
    core = {m: t for m, t in GRAPH.items() if not (m == PLUGIN or m.startswith(PLUGIN + "."))}
    offenders = [f"{m} imports {t}" for m, targets in core.items() for t in sorted(targets) if t.startswith(PLUGIN)]
    assert not offenders, "\n".join(offenders)
    naming = {
        module
        for module in core
        for node in ast.walk(ast.parse(MODULES[module].read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(PLUGIN)
    }
    assert naming == {"rayunify.builtins"}, f"modules naming {PLUGIN} as a string: {sorted(naming)}"


def layer_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name, _ in LAYERS}
    for module, targets in GRAPH.items():
        for target in targets:
            if layer_of(target) != layer_of(module):
                edges[layer_of(module)].add(layer_of(target))
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_cycle_between_layers():
    cycle = find_cycle(layer_graph())
    assert cycle is None, "layers import each other: " + " -> ".join(cycle)


def test_the_driver_build_and_trainer_do_not_import_each_other():
    build, trainer = "rayunify.driver.build", "rayunify.driver.trainer"
    assert not (build in GRAPH[trainer] and trainer in GRAPH[build]), "driver/build.py and driver/trainer.py"


@pytest.mark.parametrize(
    ("edges", "cyclic"),
    [({"a": {"b"}, "b": {"a"}}, True), ({"a": {"b"}, "b": {"c"}, "c": set()}, False), ({"a": {"a"}}, True)],
)
def test_the_cycle_finder_finds_cycles(edges, cyclic):
    assert (find_cycle(edges) is not None) == cyclic


def test_an_upward_import_is_seen(tmp_path):
    """The checker reads relative, from-, function-level and TYPE_CHECKING imports alike."""
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rayunify.driver import trainer\n"
        "def f():\n    from ..actors import workers\n"
    )
    fake = PACKAGE / "config" / "_layers_probe.py"
    fake.write_text(source)
    try:
        assert {"rayunify.driver.trainer", "rayunify.actors.workers"} <= imports_of(fake)
    finally:
        fake.unlink()
