"""Test-wide set-up: a display for Qt, and few threads on small CI machines."""

from __future__ import annotations

import os
import shutil

import pytest

# Without a display and without Xvfb, Qt would abort the whole test process; offscreen
# still supports widgets and layers, only rendering tests must then be skipped.
HAS_RENDERING_DISPLAY = bool(os.environ.get("DISPLAY")) or shutil.which("Xvfb") is not None
if not HAS_RENDERING_DISPLAY:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pytest_collection_modifyitems(config, items):
    if HAS_RENDERING_DISPLAY:
        return
    skip = pytest.mark.skip(reason="needs an OpenGL display (install xvfb)")
    for item in items:
        if "render" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # napari's make_napari_viewer fixture reads item.rep_call in its teardown to decide
    # whether to check for leaked widgets; without this a failing test reports a second,
    # misleading error.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
