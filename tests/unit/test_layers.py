"""The import graph is layered and has no circles.

Layers, lowest first; a module may import only its own layer or a lower one::

    top         fleetmeter/cli.py, client.py, predict_cli.py, ...   (anything)
    controller  controller/          → fleetmeter.controller       (core + modeler)
    modeler     modeler/ (+ zoo/)    → fleetmeter.modeler          (core)
    agent       agent/               → fleetmeter.agent            (core)
    core        fleetmeter/errors.py, v1/, _*.py, modelfile.py, blobs.py, fields.py, records.py (CORE_MODULES)

Every import statement counts, including the ones inside functions: a lazy
import hides a climb or a circle from Python, not from the design. If this
test fails, the message names the offending edge or one circle; the fix is
to move the shared piece down into its own module, not to defer the import.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {"fleetmeter": "fleetmeter", "agent": "fleetmeter.agent",
                "controller": "fleetmeter.controller", "modeler": "fleetmeter.modeler"}

CORE, AGENT, MODELER, CONTROLLER, TOP = "core", "agent", "modeler", "controller", "top"
#: Each layer and the layers it may import (its own included).
MAY_IMPORT = {
    CORE: {CORE},
    AGENT: {CORE, AGENT},
    MODELER: {CORE, MODELER},
    CONTROLLER: {CORE, MODELER, CONTROLLER},
    TOP: {CORE, AGENT, MODELER, CONTROLLER, TOP},
}
#: Modules of ``fleetmeter/`` itself that are core; every other one there is top (CLI, client).
CORE_MODULES = {
    "fleetmeter.errors", "fleetmeter._net", "fleetmeter._term", "fleetmeter._hashing", "fleetmeter._names",
    "fleetmeter._onnx_wire", "fleetmeter._rpc", "fleetmeter._version", "fleetmeter.fields", "fleetmeter.modelfile",
    "fleetmeter.blobs", "fleetmeter.records", "fleetmeter._extras",
}


def layer_of(module: str) -> str:
    """The layer of a fleetmeter module (``fleetmeter.v1.*`` is core, generated stubs)."""
    parts = module.split(".")
    if module in CORE_MODULES or parts[:2] == ["fleetmeter", "v1"]:
        return CORE
    second = parts[1] if len(parts) > 1 else ""
    return {"agent": AGENT, "modeler": MODELER, "controller": CONTROLLER}.get(second, TOP)


def discover() -> dict[str, Path]:
    """Module name → file, for every ``.py`` of the four package folders (a package is its ``__init__``)."""
    modules = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The fleetmeter modules ``module`` imports anywhere in its file (``from pkg import name`` counts
    as ``pkg.name`` when that is a module, else as ``pkg``)."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in known:  # an attribute of a module: climb to the module
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fleetmeter":
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "fleetmeter":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in known else base)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = discover()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def test_the_scan_finds_every_part(graph):
    """Guards the guard: if discovery or the parser broke, the other tests would pass on nothing."""
    assert "fleetmeter.errors" in graph and "fleetmeter.cli" in graph
    assert any(m.startswith("fleetmeter.modeler.zoo.") for m in graph)
    assert "fleetmeter.controller.server" in graph and "fleetmeter.agent.connection" in graph
    assert any(graph[m] for m in graph if m.startswith("fleetmeter.controller."))


def test_imports_inside_functions_and_relative_ones_count(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from . import sibling\nfrom ..controller.engine import RayEngine\n"
                      "def f():\n    import fleetmeter.cli\n    from fleetmeter.errors import NotFound\n")
    known = {"fleetmeter.modeler.sibling", "fleetmeter.controller.engine", "fleetmeter.cli", "fleetmeter.errors",
             "fleetmeter.modeler.m"}
    assert imports_of("fleetmeter.modeler.m", source, known) == known - {"fleetmeter.modeler.m"}


def test_no_module_imports_a_higher_layer(graph):
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) not in MAY_IMPORT[layer_of(module)]:
                bad.append(f"{module} ({layer_of(module)}) -> {target} ({layer_of(target)})")
    assert not bad, "imports that climb a layer:\n  " + "\n  ".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None (iterative DFS, colours white/grey/black)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in graph:
                    continue
                if state.get(child) == 1:
                    return path[path.index(child):] + [child]
                if not state.get(child):
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(sorted(graph[child]))))
                    break
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_exception_tree_needs_no_grpc():
    """``fleetmeter.errors`` is core: the agent and the modeler raise from it, so importing it must not
    pull in grpc (the mapping to status codes is ``fleetmeter._rpc``'s)."""
    code = "import sys, fleetmeter.errors as e; print('grpc' in sys.modules, e.InvalidArgument.code_name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "INVALID_ARGUMENT"]
