"""The jobs package's import graph, derived from the source: no cycle through pipeline.jobs (module-level imports or
imports inside functions), and only `pipeline.jobs.backend` knows both backends."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PIPELINE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the pipeline modules it imports anywhere in its file (`from .x import y` counts y if a module)."""
    modules = {module_name(p): p for p in PIPELINE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles_through(graph: dict[str, set[str]], prefix: str) -> list[list[str]]:
    """Every elementary cycle found by DFS that contains a module starting with `prefix`."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                if any(m.startswith(prefix) for m in path) and frozenset(path) not in seen:
                    seen.add(frozenset(path))
                    found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its smallest module
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_no_import_cycle_through_the_jobs_package() -> None:
    graph = import_graph()
    assert "pipeline.jobs.backend" in graph and "pipeline.jobs.store" in graph
    assert cycles_through(graph, "pipeline.jobs") == []


def test_only_get_backend_knows_both_backends() -> None:
    graph = import_graph()
    both = {"pipeline.jobs.local", "pipeline.jobs.celery_backend"}
    knowing = sorted(name for name, deps in graph.items() if both <= deps)
    assert knowing == ["pipeline.jobs.backend"]
    users = sorted(name for name, deps in graph.items() if "pipeline.jobs.celery_backend" in deps)
    assert users == ["pipeline.jobs.backend"]


def test_the_graph_finds_a_cycle_when_there_is_one() -> None:
    graph = {"pipeline.jobs.a": {"pipeline.x"}, "pipeline.x": {"pipeline.jobs.a"}, "pipeline.y": {"pipeline.x"}}
    assert cycles_through(graph, "pipeline.jobs") == [["pipeline.jobs.a", "pipeline.x", "pipeline.jobs.a"]]
