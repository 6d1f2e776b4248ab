"""No import cycles among recip's modules, function-local imports included, and the CLI's
top-level imports stay light.

grimp (import-linter's graph library) reads every `import` statement, also those inside
functions, so a cycle hidden behind a lazy import is still a cycle here. The layer rules of
docs/architecture.md are import-linter contracts in pyproject.toml (`lint-imports`, run by
.ci/run); what a contract cannot say (grimp does not tell top-level from local imports) is
checked below with `ast`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "workers", "models", "migrations", "bench")

# Cycles that exist today and that other branches remove; each entry is the import that
# closes the cycle (importer, imported). EMPTY THIS LIST when those branches are merged:
# the test fails on a listed import that no longer exists, and on any cycle not listed.
KNOWN_CYCLE_IMPORTS: frozenset[tuple[str, str]] = frozenset()


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(iter(children), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def cycles(graph: grimp.ImportGraph, ignore: frozenset[tuple[str, str]]) -> list[list[str]]:
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    for importer, imported in ignore:
        edges.get(importer, set()).discard(imported)
    return strongly_connected(edges)


def _describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    lines = []
    for importer in component:
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported in component:
                details = graph.get_import_details(importer=importer, imported=imported)
                where = ", ".join(f"line {d['line_number']}" for d in details)
                lines.append(f"  {importer} -> {imported} ({where})")
    return "\n".join(lines)


def test_no_import_cycles_beyond_the_known_ones() -> None:
    graph = _graph()
    found = cycles(graph, KNOWN_CYCLE_IMPORTS)
    assert not found, "import cycles (function-local imports count too):\n" + "\n".join(
        _describe(graph, c) for c in found)


def test_the_known_cycles_still_exist() -> None:
    """A known cycle that was removed must leave the allow-list, so it cannot come back."""
    graph = _graph()
    gone = sorted(e for e in KNOWN_CYCLE_IMPORTS if not graph.direct_import_exists(
        importer=e[0], imported=e[1]))
    assert not gone, f"these imports are gone: remove them from KNOWN_CYCLE_IMPORTS: {gone}"


def test_a_local_import_cycle_is_found() -> None:
    """Guards the two tests above: a cycle closed by a function-local import is reported."""
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b", line_number=1, line_contents="import")
    graph.add_import(importer="pkg.b", imported="pkg.c", line_number=1, line_contents="import")
    graph.add_import(importer="pkg.c", imported="pkg.a", line_number=9, line_contents="  import")
    assert cycles(graph, frozenset()) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert cycles(graph, frozenset({("pkg.c", "pkg.a")})) == []


def test_grimp_sees_function_local_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    pkg = tmp_path / "cyclepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclepkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyclepkg import a\n    return a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclepkg", cache_dir=None)
    assert cycles(graph, frozenset()) == [["cyclepkg.a", "cyclepkg.b"]]


# --- top-level imports that a contract cannot express ------------------------------------


def top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (also under `if`/`try`, not in defs or classes, not
    under `if TYPE_CHECKING:`)."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(path.read_text()).body)
    return found


def _hits(modules: set[str], banned: tuple[str, ...]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in banned or m.startswith(banned)}


@pytest.mark.parametrize(("folder", "banned", "except_files"), [
    # the CLI wires everything, but torch, ray, workers and models only inside command bodies
    ("orchestrator/cli", ("torch", "ray", "workers", "models"), ()),
    # wandb inside functions only
    ("orchestrator/tracking", ("wandb",), ()),
    ("workers/train", ("wandb",), ()),
    # matplotlib inside plots.py functions only
    ("orchestrator/report", ("matplotlib",), ()),
])
def test_heavy_imports_stay_inside_functions(folder: str, banned: tuple[str, ...],
                                             except_files: tuple[str, ...]) -> None:
    bad = {str(p.relative_to(ROOT)): sorted(_hits(top_level_imports(p), banned))
           for p in sorted((ROOT / folder).rglob("*.py")) if p.name not in except_files}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_top_level_import_scan_skips_functions_and_type_checking(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                   "    import torch\ntry:\n    import ray\nexcept ImportError:\n    pass\n"
                   "def f():\n    import models\n")
    assert top_level_imports(src) == {"os", "typing", "ray"}
