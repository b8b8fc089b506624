"""The package's shape: one package per stage of the data flow, imports that run one way along
it, no import circle between modules, and no module over 400 lines.

Read with ``ast`` only (nothing is imported, so no torch): every ``import``/``from`` of a
``diffris`` module, at the top of a module or inside a function, relative ones included. Importing
a package (``diffris.models``) counts as importing its ``__init__``; ``from diffris.models import
model`` as importing the submodule ``diffris.models.model``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "diffris"
MAX_LINES = 400
# The shared basics, then the stages in data-flow order: a stage may import the basics and the
# stages before it, never one after it (each package's docstring says why it sits where it does).
BASICS = ("cli", "config", "errors", "fileio", "determinism")
STAGES = ("data", "models", "pretraining", "features", "training", "evaluation", "report", "studies", "pipeline")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The ``diffris`` modules that the module at ``path`` imports, anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {_known_prefix(m, known) for m in found if m == "diffris" or m.startswith("diffris.")} - {name, None}


def _known_prefix(module: str, known: set[str]) -> str | None:
    """``module`` itself, or the longest known package that holds it (an attribute import)."""
    while module and module not in known:
        module = module.rpartition(".")[0]
    return module or None


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported_modules(path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_lazy_relative_and_package_imports(tmp_path, monkeypatch):
    package = tmp_path / "diffris"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from diffris.sub import b\n")
    (package / "sub" / "__init__.py").write_text("from . import c\n")
    (package / "sub" / "b.py").write_text("import diffris.sub\n")
    (package / "sub" / "c.py").write_text("from ..a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    graph = import_graph()
    assert graph["diffris.a"] == {"diffris.sub.b"}
    assert graph["diffris.sub"] == {"diffris.sub.c"}
    assert graph["diffris.sub.b"] == {"diffris.sub"}
    assert graph["diffris.sub.c"] == {"diffris.a"}
    assert find_cycle(graph) == ["diffris.a", "diffris.sub.b", "diffris.sub", "diffris.sub.c", "diffris.a"]


def test_no_import_circle():
    graph = import_graph()
    assert len(graph) > 40 and "diffris.training.trainer" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def stage_of(module: str) -> str:
    """``diffris.training.trainer`` -> ``training``; a basic module is its own name."""
    return module.split(".")[1] if "." in module else ""


def backward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a module in a later stage, or of a stage from a basic module."""
    rank = {stage: i for i, stage in enumerate(STAGES)}
    found = []
    for module, targets in sorted(graph.items()):
        here = stage_of(module)
        for target in sorted(targets):
            there = stage_of(target)
            if there in rank and (here not in rank or rank[there] > rank[here]):
                found.append(f"{module} -> {target}")
    return found


def test_the_top_level_holds_the_stages_and_the_basics_only():
    entries = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert entries == {"__init__", "__main__", *BASICS, *STAGES}


def test_every_stage_says_what_it_owns_and_may_import():
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text())) or ""
        assert "Imports:" in doc, f"diffris/{stage}/__init__.py: the docstring names no 'Imports:'"


def test_imports_run_one_way_along_the_data_flow():
    assert backward_imports(import_graph()) == []


def test_a_backward_import_is_found(tmp_path, monkeypatch):
    package = tmp_path / "diffris"
    for stage in ("training", "evaluation"):
        (package / stage).mkdir(parents=True)
        (package / stage / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "config.py").write_text("")
    (package / "training" / "loop.py").write_text("def f():\n    from diffris.evaluation import score\n")
    (package / "evaluation" / "score.py").write_text("from diffris.training import loop\nfrom diffris import config\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert backward_imports(import_graph()) == ["diffris.training.loop -> diffris.evaluation.score"]


def test_no_module_over_400_lines():
    sizes = {path.relative_to(PACKAGE.parent).as_posix(): len(path.read_text().splitlines()) for path in modules().values()}
    over = {path: lines for path, lines in sizes.items() if lines > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
