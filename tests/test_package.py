"""The distribution: import hygiene, the napari manifest in editable and wheel installs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_cellina_pulls_in_no_gui_and_no_torch():
    code = (
        "import sys, cellina\n"
        "assert cellina.__version__\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'torch', 'scvi'})\n"
        "print(','.join(heavy))\n"
    )
    env = {"PATH": "", "QT_QPA_PLATFORM": "", "DISPLAY": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == ""


def test_library_layers_import_without_a_display_or_qt():
    code = (
        "import sys\n"
        "import cellina.spatial, cellina.datasets, cellina._spatial_utils\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": ""}, check=True)
    assert out.stdout.strip() == ""


def test_unknown_attribute_is_an_attribute_error():
    import cellina

    with pytest.raises(AttributeError, match="no_such_thing"):
        cellina.no_such_thing  # noqa: B018


def test_tutorial_import_path_matches_public_api():
    import cellina
    from cellina._spatial_utils import compute_spatial_features, spatial_neighbors

    assert spatial_neighbors is cellina.spatial_neighbors
    assert compute_spatial_features is cellina.compute_spatial_features


def test_installed_manifest_is_found_and_valid():
    from npe2 import PluginManager

    manager = PluginManager()
    manager.discover()
    manifest = manager.get_manifest("napari-cellina")
    assert manifest.display_name == "Cellina"
    keys = [sample.key for sample in manifest.contributions.sample_data]
    assert "synthetic_tumour_section" in keys
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-cellina"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_inside_package_is_the_top_level_one():
    packaged = REPO / "src" / "cellina" / "napari.yaml"
    assert packaged.read_text() == (REPO / "napari.yaml").read_text()


@pytest.mark.slow
def test_wheel_ships_manifest_and_entry_points(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = tmp_path.glob("napari_cellina-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "cellina/napari.yaml" in names
        shipped = archive.read("cellina/napari.yaml").decode()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_text = archive.read(entry_points).decode()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata_text = archive.read(metadata).decode()
    assert shipped == (REPO / "napari.yaml").read_text()
    assert "napari-cellina = cellina:napari.yaml" in entry_text
    assert "cellina = cellina.cli:main" in entry_text
    assert "Classifier: Framework :: napari" in metadata_text
    assert "cellina/plugin/_sample_data.py" in names

    from npe2 import PluginManifest

    with zipfile.ZipFile(wheel) as archive:
        archive.extract("cellina/napari.yaml", tmp_path / "unpacked")
    manifest = PluginManifest.from_file(tmp_path / "unpacked" / "cellina" / "napari.yaml")
    assert manifest.name == "napari-cellina"
