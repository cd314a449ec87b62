"""The shape of `pipeline/`: no import cycles (module level or inside functions), and each run-folder file name is
spelled in one module only (pipeline/rundir.py). Both are derived from the source with `ast`, nothing is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pipeline import rundir

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# Cycles other work removes: a cycle passes while its modules stay within one of these sets.
KNOWN_CYCLES: list[frozenset[str]] = []  # none left; a new cycle is a design error, not an entry for this list


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package (packages by their __init__.py)."""
    out: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) import target seen in `module`."""
    if not level:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> modules of the package it imports anywhere in its source (`from pkg import mod` counts as pkg.mod)."""
    files = module_files(package)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                targets = [base]
                targets += [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in files]
            for target in targets:
                while target and target not in files:  # `import pipeline.a.b` imports pipeline.a.b's module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.add(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "",
        "a.py": "from . import b\nfrom .sub import d\n",
        "b.py": "def f():\n    import pkg.c\n",
        "c.py": "from pkg import e\nfrom pkg.sub.d import thing\n",
        "e.py": "from .b import f as g\nimport os\n",
        "sub/__init__.py": "from . import d\n",
        "sub/d.py": "from .. import a\nthing = 1\n",
    }
    for name, text in sources.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg", "pkg.b", "pkg.sub", "pkg.sub.d"}
    assert graph["pkg.b"] == {"pkg.c"}  # inside a function, absolute
    assert graph["pkg.c"] == {"pkg", "pkg.e", "pkg.sub.d"}
    assert graph["pkg.e"] == {"pkg.b"}
    assert graph["pkg.sub"] == {"pkg.sub.d"}
    assert graph["pkg.sub.d"] == {"pkg", "pkg.a"}
    assert cycles(graph) == [frozenset({"pkg.a", "pkg.b", "pkg.c", "pkg.e", "pkg.sub", "pkg.sub.d"})]
    real = import_graph()
    assert "pipeline.errors" in real["pipeline.train"]  # module level, relative
    assert "pipeline.eval_callback" in real["pipeline.train"]  # inside a function


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]


def test_pipeline_has_no_import_cycle() -> None:
    graph = import_graph()
    unexpected = []
    for component in cycles(graph):
        if any(component <= known for known in KNOWN_CYCLES):
            continue
        edges = sorted(f"{a} -> {b}" for a in component for b in graph[a] if b in component)
        unexpected.append(f"{sorted(component)}: {', '.join(edges)}")
    assert not unexpected, "import cycles in pipeline/:\n" + "\n".join(unexpected)


def test_evaluate_and_export_do_not_import_the_trainer() -> None:
    graph = import_graph()
    for module in ("pipeline.evaluate", "pipeline.export", "pipeline.modelcard"):
        assert not graph[module] & {"pipeline.train", "pipeline.callbacks", "pipeline.eval_callback"}, module
    assert graph["pipeline.rundir"] <= {"pipeline.atomic", "pipeline.errors"}  # the contract stands alone


def _string_constants(path: Path) -> set[str]:
    """Every string constant of a module (f-string parts included) that could be a path or pattern: no whitespace,
    so prose (docstrings, messages, help texts) that mentions a file is not counted."""
    return {node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and not re.search(r"\s", node.value)}


def _spelling(name: str) -> re.Pattern[str]:
    """The name as a path part, glob or regex ("best.json", "RUN/best.json", "checkpoint-*", r"checkpoint-(\\d+)")."""
    after = "" if name.endswith("-") else r"(?![\w.])"
    return re.compile(rf"(?<![\w.-]){re.escape(name)}{after}")


def test_run_folder_names_are_spelled_only_in_rundir() -> None:
    names = rundir.RUN_FILE_NAMES
    assert {"progress.jsonl", "train.log", "config.yaml", "STOP", "best.json", "manifest.json", "checkpoint-"} <= \
        set(names)
    assert _spelling("checkpoint-").search("checkpoint-*") and _spelling("best.json").search("RUN/best.json")
    assert not _spelling("config.yaml").search("deploy_config.yaml") and not _spelling("STOP").search("STOPPED")
    spelled: dict[str, list[str]] = {name: [] for name in names}
    for module, path in module_files().items():
        constants = _string_constants(path)
        for name in names:
            if any(_spelling(name).search(text) for text in constants):
                spelled[name].append(module)
    wrong = {name: modules for name, modules in spelled.items() if modules != ["pipeline.rundir"]}
    assert not wrong, f"run-folder names must be spelled in pipeline/rundir.py only (ask rundir instead): {wrong}"
