"""The layer rules of docs/architecture.md, checked on the source (every import, lazy ones too)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cellina"
GUI = ("cellina.plugin", "napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui")
# package -> what it may never import
FORBIDDEN = {
    "model": GUI,
    "counterfactual": GUI,
    "spatial": (*GUI, "cellina.model", "cellina.counterfactual", "cellina.evaluation"),
    "evaluation": GUI,
    "datasets": (*GUI, "cellina.model", "cellina.spatial", "cellina.counterfactual", "cellina.evaluation"),
    "keys.py": (*GUI, "cellina.model", "cellina.spatial"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports, at any depth of the file."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _files(part: str) -> list[Path]:
    target = SRC / part
    return [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_library_layers_respect_the_import_rules(part):
    offences = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in _files(part)
        for name in sorted(_imports(path))
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[part])
    ]
    assert not offences, "\n".join(offences)


def test_counterfactual_reaches_evaluation_only_for_its_fold_change_maths():
    """``counterfactual`` sits below ``evaluation`` but shares its fold changes: it may take only names that
    ``cellina.evaluation`` serves from ``_lfc``, a module that imports nothing of cellina but ``_utils``."""
    import cellina.evaluation as evaluation

    fold_change = {name for name, module in evaluation._NAMES.items() if module == "_lfc"}
    allowed = {"cellina.evaluation", *(f"cellina.evaluation.{name}" for name in fold_change)}
    offences = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in _files("counterfactual")
        for name in sorted(_imports(path))  # relative imports resolved
        if name.startswith("cellina.evaluation") and name not in allowed
    ]
    assert not offences, "\n".join(offences)
    leaf = _imports(SRC / "evaluation" / "_lfc.py") | _imports(SRC / "evaluation" / "_utils.py")
    outside = {name for name in leaf if name.startswith("cellina") and not name.startswith("cellina.evaluation._utils")}
    assert not outside, outside


def test_no_private_scvi_tools_or_lightning_names():
    pattern = re.compile(
        r"scvi\.[\w.]*\._\w|\b_trainer\b|from (scvi|lightning)[\w.]* import _\w|(?<!self)\._validate_anndata\(|lightning\.[\w.]*\._"
    )
    offences = [
        f"{path.relative_to(SRC)}:{i}: {line.strip()}"
        for path in SRC.rglob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offences, "\n".join(offences)


def test_no_import_cycle_between_modules():
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {
        name: {m for imported in _imports(path) for m in modules if imported == m and m != name}
        for name, path in modules.items()
    }
    # a module importing its own parent package (``from . import x``) only reaches modules the
    # parent has already loaded; every other edge, a package's imports of its submodules
    # included, counts
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack + [node, nxt]
            if nxt not in state:
                found = visit(nxt, stack + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            assert cycle is None, " -> ".join(cycle[cycle.index(cycle[-1]) :])


def _code_lines(node: ast.AST) -> int:
    """Lines of a function from ``def`` to its end, its docstring left out."""
    total = node.end_lineno - node.lineno + 1
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        total -= first.end_lineno - first.lineno + 1
    return total


def test_files_and_functions_stay_small():
    """No file over 500 lines; no function over 80 lines of code (docstrings are documentation)."""
    offences = []
    for path in SRC.rglob("*.py"):
        source = path.read_text()
        if source.count("\n") > 500:
            offences.append(f"{path.relative_to(SRC)} has {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > 80:
                offences.append(f"{path.relative_to(SRC)}: {node.name} has {_code_lines(node)} lines of code")
    assert not offences, "\n".join(offences)
