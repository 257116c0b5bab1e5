"""The top-level packages form one layered graph: no cycles, and client and server never meet.

    common  <-  client, server, deploy  <-  simulations (client, server)  <-  medfed

``deploy`` (certificates, command lines, gateway config) imports only ``common``; only
``medfed`` (``medfed certs``, ``medfed.testing``) imports it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "client", "server", "deploy", "simulations", "medfed")
# Which packages each package may import (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "common": frozenset(),
    "client": frozenset({"common"}),
    "server": frozenset({"common"}),
    "deploy": frozenset({"common"}),
    "simulations": frozenset({"common", "client", "server"}),
    "medfed": frozenset({"common", "client", "server", "deploy", "simulations"}),
}

Edge = tuple[str, str]


def _imported_packages(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno))
    return [(name, line) for name, line in found if name in PACKAGES]


def package_edges() -> dict[Edge, list[str]]:
    """(importer, imported) -> where ("path:line"), for imports between top-level packages."""
    edges: dict[Edge, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for imported, line in _imported_packages(tree):
                if imported != package:
                    where = f"{path.relative_to(REPO_ROOT)}:{line}"
                    edges[(package, imported)].append(where)
    return edges


def cycles(edges: set[Edge]) -> list[list[str]]:
    """Every elementary cycle's package list, found by depth-first search (6 nodes: cheap)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in edges:
        graph[source].add(target)
    found: set[tuple[str, ...]] = set()

    def visit(path: list[str]) -> None:
        for nxt in graph[path[-1]]:
            if nxt == path[0]:
                start = path.index(min(path))
                found.add(tuple(path[start:] + path[:start]))
            elif nxt not in path:
                visit([*path, nxt])

    for node in list(graph):
        visit([node])
    return [list(cycle) for cycle in sorted(found)]


def test_cycle_finder_sees_a_two_package_cycle() -> None:
    assert cycles({("a", "b"), ("b", "a"), ("b", "c")}) == [["a", "b"]]


def test_packages_import_only_downwards_and_never_in_a_cycle() -> None:
    # Execute
    edges = package_edges()

    # Assert
    bad = {edge: where for edge, where in edges.items() if edge[1] not in ALLOWED[edge[0]]}
    loops = cycles(set(edges))
    lines = [f"{a} -> {b}: {', '.join(where)}" for (a, b), where in sorted(bad.items())]
    lines += [" -> ".join([*cycle, cycle[0]]) for cycle in loops]
    assert not bad and not loops, "import graph violations:\n" + "\n".join(lines)
