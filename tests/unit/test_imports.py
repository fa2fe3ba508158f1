"""The import rules of e2b_local: one-way dependencies, no cycles (read from the source with ast).

Every import statement counts, wherever it stands: at module level, inside a function, or under
`if TYPE_CHECKING:` (a type-only import is still a dependency of the importing module).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "e2b_local"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The module of ours that `name` (a module, or a name inside one) stands for."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """The modules of e2b_local that `module` imports."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                resolved = _resolve(target)
                if resolved is not None and resolved != module:
                    found.add(resolved)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# (modules the rule covers, what they must not import)
DIRECTION_RULES = {
    "the sandbox side never imports the host side": (
        (f"{PACKAGE}.agent", f"{PACKAGE}.interpreter", f"{PACKAGE}.mcp_gateway", f"{PACKAGE}.zygote",
         f"{PACKAGE}.linux"),
        (f"{PACKAGE}.control", f"{PACKAGE}.isolation")),
    "isolation is the bottom layer of the host side": ((f"{PACKAGE}.isolation",), (f"{PACKAGE}.control",)),
}


@pytest.mark.parametrize("rule", DIRECTION_RULES)
def test_imports_run_one_way(rule: str) -> None:
    covered, forbidden = DIRECTION_RULES[rule]
    violations = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if _in(m, *covered)
                        for t in targets if _in(t, *forbidden))
    assert not violations, f"{rule}:\n" + "\n".join(violations)


def test_protocol_imports_nothing_of_ours() -> None:
    assert GRAPH[f"{PACKAGE}.protocol"] == set()


def test_the_agent_bundle_holds_everything_the_sandbox_side_imports() -> None:
    """Sandboxes see only the bundle's copy of e2b_local (isolation/agent_bundle.py)."""
    from e2b_local.isolation.agent_bundle import sandbox_sources

    bundled = {_module_name(ROOT / path) for path in sandbox_sources(ROOT) if path.suffix == ".py"}
    assert {f"{PACKAGE}.agent", f"{PACKAGE}.interpreter.app", f"{PACKAGE}.mcp_gateway"} <= bundled
    missing = sorted(f"{m} imports {t}" for m in bundled for t in GRAPH[m] if t not in bundled)
    assert not missing, "\n".join(missing)


def cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """Each knot of modules that import each other (a strongly connected component, found with Tarjan's
    algorithm): its members, and one shortest cycle through the first of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted((sorted(c), _cycle_in(graph, c)) for c in components)


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle in {component}")


def test_the_cycle_finder_reports_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert cycles(graph) == [(["a", "b", "c"], ["a", "b", "c", "a"]), (["e", "f"], ["e", "f", "e"])]
    # Two cycles sharing a module are one knot.
    assert cycles({"a": {"b", "c"}, "b": {"a"}, "c": {"a"}}) == [(["a", "b", "c"], ["a", "b", "a"])]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_there_is_no_import_cycle() -> None:
    found = cycles(GRAPH)
    assert not found, "import cycles in e2b_local:\n" + "\n".join(
        f"{', '.join(members)} (for one: {' -> '.join(cycle)})" for members, cycle in found)


def test_the_graph_sees_the_imports() -> None:
    # A guard on the parser itself: known edges of the tree are found.
    assert f"{PACKAGE}.protocol" in MODULES
    assert any(GRAPH[m] for m in MODULES if _in(m, f"{PACKAGE}.control"))
    assert all(_in(t, PACKAGE) for targets in GRAPH.values() for t in targets)
