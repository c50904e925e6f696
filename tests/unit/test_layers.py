"""The import graph of the `mimic` namespace: layered one way, with no cycles between files or packages.

Static (ast): every `import` and `from ... import` in every module, lazy ones inside functions included,
resolved against the same folder -> package mapping pyproject.toml installs. A module may import from its
own package or from packages of lower layers; anything else, and any cycle, fails with the edges named.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# Ground up (the shared DESIGN.md, section 2). `mimic` is the top package's own modules (cli, demo).
LAYERS: dict[str, int] = {
    "mimic.robots": 1,
    "mimic.sim": 2,
    "mimic.data": 2,
    "mimic.teleop": 3,
    "mimic.policies": 3,
    "mimic.calibration": 4,
    "mimic.workflows": 4,
    "mimic": 5,
    "mimic_ros": 5,
}
# Within the top layer the `mimic` command and its demo drive the ROS sessions; mimic_ros never imports them.
SAME_LAYER_USES = {("mimic", "mimic_ros")}


def package_dirs() -> dict[str, Path]:
    """Installed package name -> folder, as pyproject's package-dir maps them (subpackages nested)."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = tool["package-dir"]
    out = {}
    for pkg in tool["packages"]:
        base = max((r for r in roots if pkg == r or pkg.startswith(r + ".")), key=len)
        out[pkg] = REPO / roots[base] / Path(*pkg[len(base) :].lstrip(".").split(".") if pkg != base else ())
    return out


def modules() -> dict[str, Path]:
    mods = {}
    for pkg, folder in package_dirs().items():
        for f in folder.glob("*.py"):
            mods[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return mods


def part_of(module: str) -> str:
    """The layered package a module belongs to (longest LAYERS key that prefixes it)."""
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)


def import_edges() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for mod, path in mods.items():
        pkg = mod if path.stem == "__init__" else mod.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for t in targets:
                r = resolve(t)
                if (
                    r and r != mod and not mod.startswith(r + ".")
                ):  # a package's __init__ is no edge of its own
                    out.add(r)
        edges[mod] = out
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_every_folder_maps_into_the_namespace():
    dirs = package_dirs()
    assert all(p == "mimic_ros" or p == "mimic" or p.startswith("mimic.") for p in dirs)
    for pkg, folder in dirs.items():
        assert (folder / "__init__.py").is_file(), f"{pkg}: {folder} has no __init__.py"
    assert {part_of(m) for m in modules()} == set(LAYERS)


def test_no_cycle_between_files():
    assert cycles(import_edges()) == []


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for mod, targets in import_edges().items():
        graph.setdefault(part_of(mod), set()).update(
            part_of(t) for t in targets if part_of(t) != part_of(mod)
        )
    assert cycles(graph) == []


def test_imports_run_down_the_layers():
    wrong = sorted(
        f"{mod} -> {t}"
        for mod, targets in import_edges().items()
        for t in targets
        if part_of(t) != part_of(mod)
        and LAYERS[part_of(t)] >= LAYERS[part_of(mod)]
        and (part_of(mod), part_of(t)) not in SAME_LAYER_USES
    )
    assert wrong == []


def test_the_checker_sees_a_cycle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    edges = import_edges()
    assert "mimic.policies.policy" in edges["mimic.policies.checkpoint"]  # the walk resolves real imports
    assert part_of("mimic.workflows.train") == "mimic.workflows" and part_of("mimic.cli") == "mimic"


def test_the_policy_library_imports_no_workflow_simulator_or_leader():
    leaks = sorted(
        f"{mod} -> {t}"
        for mod, targets in import_edges().items()
        if part_of(mod) == "mimic.policies"
        for t in targets
        if part_of(t) in ("mimic.sim", "mimic.teleop", "mimic.workflows", "mimic")
    )
    assert leaks == []
