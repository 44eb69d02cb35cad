"""The plugin's layers: plain types, pure steps, the session, then the docks (the package-wide rules
are in tests/test_architecture.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cellina.plugin

PLUGIN = Path(cellina.plugin.__file__).parent
QT_FREE = (
    "_state",
    "_tissue",
    "_steps",
    "_training",
    "_results",
    "_session",
    "_session_cells",
    "_session_jobs",
    "_selection",
    "_colours",
    "_points",
    "_attention",
)


def _module_name(path: Path) -> str:
    return ".".join(("cellina", *path.relative_to(PLUGIN.parent).with_suffix("").parts))


def _imports() -> dict[str, set[str]]:
    """Every plugin module and the plugin modules it imports (at any depth of the file)."""
    graph = {}
    for path in PLUGIN.rglob("*.py"):
        name = _module_name(path)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m.startswith("cellina.plugin.") and m.split(".")[2] != "__init__"}
    modules = set(graph)
    return {name: {m for m in deps if m in modules} - {name} for name, deps in graph.items()}


def test_qt_free_layers_do_not_import_qt_or_napari():
    modules = ", ".join(f"cellina.plugin.{m}" for m in QT_FREE)
    code = (
        f"import sys; import {modules}; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6')]; print(bad); assert not bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_plain_types_import_no_other_plugin_module():
    assert _imports()["cellina.plugin._state"] == set()


def test_steps_never_import_the_session():
    graph = _imports()
    for name in ("_tissue", "_steps", "_training", "_results", "_attention"):
        assert not {m for m in graph[f"cellina.plugin.{name}"] if m.startswith("cellina.plugin._session")}, name


def test_docks_talk_to_the_session_not_to_the_steps():
    steps = {
        "cellina.plugin._steps",
        "cellina.plugin._training",
        "cellina.plugin._results",
        "cellina.plugin._attention",
        "cellina.plugin._session_jobs",
        "cellina.plugin._session_cells",
    }
    for name, deps in _imports().items():
        if name.startswith("cellina.plugin.widgets"):
            assert not deps & steps, f"{name} imports {deps & steps}"
