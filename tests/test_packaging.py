"""The package installs as a napari plugin, imports lightly, and ships its package data."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import zarr
from PIL import Image

from conftest import REPO_ROOT


def _modules_after_import(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out))


def test_core_packages_import_without_qt_napari_or_torch() -> None:
    loaded = _modules_after_import("import napari_m2mrf, training, sample_data")
    heavy = {name for name in loaded if name.split(".")[0] in {"torch", "napari", "qtpy", "PyQt6", "PyQt5", "PySide6"}}
    assert not heavy, f"importing the core packages pulled in {sorted(heavy)[:10]}"


def test_cli_help_does_not_import_torch_or_napari() -> None:
    loaded = _modules_after_import("from napari_m2mrf.cli import build_parser; build_parser()")
    assert "torch" not in loaded and "napari" not in loaded


def test_manifest_validates_with_npe2() -> None:
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2), "validate", "napari-m2mrf"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_is_registered_through_the_entry_point() -> None:
    from importlib.metadata import entry_points

    (entry,) = [ep for ep in entry_points(group="napari.manifest") if ep.name == "napari-m2mrf"]
    assert entry.value == "napari_m2mrf:napari.yaml"


def test_built_wheel_carries_manifest_and_package_data(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("napari_m2mrf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "napari_m2mrf/napari.yaml" in names
    for package in ("napari_m2mrf", "napari_m2mrf/sampling", "training", "training/recipes", "sample_data"):
        assert f"{package}/__init__.py" in names
    bundled = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "sample_data" / "checkpoints").glob("*"))
    assert set(bundled) <= names, f"bundled checkpoints missing from the wheel: {set(bundled) - names}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "napari-m2mrf = napari_m2mrf:napari.yaml" in text
    assert "napari-m2mrf = napari_m2mrf.cli:main" in text


def test_the_wheel_runs_on_its_own_from_an_unrelated_folder(installed_wheel: Path, tmp_path: Path) -> None:
    """The installed wheel imports from its own environment and finds its manifest and bundled models."""
    code = (
        "import json, napari_m2mrf, training, sample_data\n"
        "from importlib.resources import files\n"
        "from npe2 import PluginManager\n"
        "manager = PluginManager(); manager.discover()\n"
        "manifest = manager.get_manifest('napari-m2mrf')\n"
        "print(json.dumps({'files': [m.__file__ for m in (napari_m2mrf, training, sample_data)],\n"
        "  'widgets': len(manifest.contributions.widgets),\n"
        "  'checkpoints': sorted(p.name for p in (files('sample_data') / 'checkpoints').iterdir())}))\n"
    )
    result = subprocess.run(
        [str(installed_wheel / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    found = json.loads(result.stdout)
    venv = installed_wheel.parent
    assert all(Path(f).is_relative_to(venv) for f in found["files"]), found["files"]
    assert found["widgets"] >= 5
    assert {"fundus_m2mrf_w18s.safetensors", "slide_deformed_w18s.safetensors"} <= set(found["checkpoints"])
    image = tmp_path / "eye.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (192, 256, 3), dtype=np.uint8)).save(image)
    predicted = subprocess.run(
        [str(installed_wheel / "napari-m2mrf"), "predict", str(image), "--model", "fundus_m2mrf_w18s", "--out", "out"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    provenance = json.dumps(zarr.open_group(str(tmp_path / "out" / "eye.m2mrf.zarr"), mode="r").attrs.asdict())
    assert "fundus_m2mrf_w18s" in provenance


def test_the_manifest_claims_every_format_the_reader_reads() -> None:
    """npe2 filters files by the manifest's patterns before asking the reader: a format the reader
    knows but the manifest does not name can never be opened from napari."""
    import yaml

    from napari_m2mrf.io.formats import IMAGE_EXTENSIONS, ZARR_EXTENSIONS
    from napari_m2mrf.widgets.reader_defaults import READER_DEFAULTS

    manifest = yaml.safe_load((REPO_ROOT / "napari_m2mrf" / "napari.yaml").read_text())
    (reader,) = manifest["contributions"]["readers"]
    patterns = set(reader["filename_patterns"])
    assert {f"*{ext}" for ext in IMAGE_EXTENSIONS + ZARR_EXTENSIONS} <= patterns
    assert all(pattern in READER_DEFAULTS for pattern in patterns if pattern != "*.zarr")
