"""The top-level package import graph has no cycle, and the node runtime imports no tool or centre code.

Every import counts, including the ones inside functions (lazy imports still make a dependency). The
packages are read where Python imports them from, so the test checks what is installed, not a list.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

TOP_LEVEL = ("agent", "hardware", "models", "provisioning", "centre")
#: what runs on the node; it may import only these packages (the tools and the centre import it, not back)
NODE_RUNTIME = {"agent": {"agent", "hardware"}, "hardware": {"hardware"}}


def package_files(pkg: str) -> list[Path]:
    spec = importlib.util.find_spec(pkg)
    assert spec is not None and spec.submodule_search_locations, f"{pkg}: not an installed package"
    return sorted(p for loc in spec.submodule_search_locations for p in Path(loc).rglob("*.py"))


def imported_tops(path: Path) -> set[str]:
    """Top-level packages of ours that a file imports anywhere in its body (relative imports are its own)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & set(TOP_LEVEL)
    return found


def import_graph() -> dict[str, dict[str, list[str]]]:
    """package → imported package → the files that import it."""
    graph: dict[str, dict[str, list[str]]] = {p: defaultdict(list) for p in TOP_LEVEL}
    for pkg in TOP_LEVEL:
        for path in package_files(pkg):
            for dep in imported_tops(path) - {pkg}:
                graph[pkg][dep].append(path.name)
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in graph[n]:
            if state.get(m) == 1:
                return [*stack[stack.index(m):], m]
            if m not in state and (cycle := visit(m)):
                return cycle
        state[n] = 2
        stack.pop()
        return None

    for n in graph:
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_top_level_packages_import_no_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or []) + f" ({dict(graph[cycle[0]])})"


@pytest.mark.parametrize("pkg", sorted(NODE_RUNTIME))
def test_node_runtime_imports_no_tool_or_centre_code(pkg):
    bad = {dep: files for dep, files in import_graph()[pkg].items() if dep not in NODE_RUNTIME[pkg]}
    assert not bad, f"{pkg} imports {bad}"


def test_the_checker_sees_a_cycle_and_a_lazy_import(tmp_path):
    """The walk must not miss what it exists to catch: an import inside a function, and a two-package loop."""
    f = tmp_path / "m.py"
    f.write_text("def later():\n    from centre.store import Store\n")
    assert imported_tops(f) == {"centre"}
    assert find_cycle({"a": {"b": []}, "b": {"a": []}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b": []}, "b": {}}) is None


def test_tool_commands_are_registered_entry_points():
    """The CLI mounts the tools by entry point (no import from agent); each one names a register()."""
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group="edgecam.commands")}
    assert {"model", "provisioning", "centre"} <= set(eps)
    for ep in eps.values():
        assert callable(ep.load())


def test_edgecam_run_loads_no_tool_or_centre_module():
    """Entry points are not imports, so the walk above cannot see them: run the CLI and look at sys.modules."""
    code = ("import sys\nfrom agent.cli import main\ntry:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'models', 'provisioning', 'centre'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    tools = subprocess.run([sys.executable, "-m", "agent.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert tools.returncode == 0 and "centre" in tools.stdout and "broker-config" in tools.stdout, tools.stderr
