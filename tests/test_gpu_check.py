"""The prepared GPU check (``scripts/gpu_check.sh``, ``benchmarks/gpu_check/``) in tiny mode on the CPU.

The device machine has no napari, Qt, dask, imagecodecs or pydantic, so every Python process the
check starts (the check, pytest, the trainer; without CUDA the stages run in the check's process) runs here with a
``sitecustomize`` that blocks those imports and records every file opened for writing, every
folder made and every rename; the check must succeed and write only under its ``OUT_DIR``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ["cuda_tests", "inference", "training", "slide", "fundus"]
# Not on the device machine and not carried in its wheelhouse (zarr, numcodecs, psygnal, pydantic are carried).
BLOCKED = [
    "napari", "qtpy", "magicgui", "superqt", "PyQt6", "PyQt5", "PySide6", "PySide2", "vispy", "npe2",
    "app_model", "dask", "distributed", "imagecodecs", "platformdirs",
    "pytestqt", "pytest_xvfb", "pyvirtualdisplay", "ome_zarr", "ome_zarr_models",
]

SITECUSTOMIZE = r'''
import importlib.abc, os, sys

_BLOCKED = set(os.environ["GPU_CHECK_BLOCK"].split(","))
_LOG = os.environ["GPU_CHECK_WRITES"]
_busy = False


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            _note("blocked-import", name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not on the GPU machine)", name=name)
        return None


def _note(kind, path):
    global _busy
    if _busy:
        return
    _busy = True
    try:
        with open(_LOG, "a") as handle:
            handle.write(f"{os.getpid()}\t{kind}\t{path}\n")
    finally:
        _busy = False


def _absolute(path):
    if isinstance(path, int):
        return None
    path = os.fsdecode(path)
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def _hook(event, args):
    if _busy:
        return
    try:
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                mode is None and flags is not None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and _absolute(path):
                _note("write", _absolute(path))
        elif event in ("os.mkdir", "os.symlink", "os.link"):
            if _absolute(args[1] if event != "os.mkdir" else args[0]):
                _note(event, _absolute(args[1] if event != "os.mkdir" else args[0]))
        elif event in ("os.rename", "os.replace"):
            if _absolute(args[1]):
                _note(event, _absolute(args[1]))
    except Exception:
        pass


sys.meta_path.insert(0, _Blocker())
sys.addaudithook(_hook)
'''


def _environment(tmp_path: Path) -> tuple[dict[str, str], Path]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    writes = tmp_path / "writes.tsv"
    sandbox = tmp_path / "sandbox"
    (sandbox / "home").mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "GPU_CHECK_BLOCK": ",".join(BLOCKED),
        "GPU_CHECK_WRITES": str(writes),
        "HOME": str(sandbox / "home"),
        "XDG_CACHE_HOME": str(sandbox / "home" / ".cache"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("NAPARI_M2MRF_CACHE", None)
    return env, writes


def _records(writes: Path) -> list[tuple[str, str]]:
    if not writes.is_file():
        return []
    return [tuple(line.split("\t")[1:3]) for line in writes.read_text().splitlines() if line.count("\t") == 2]


def _synthetic_slide():
    """``benchmarks.gpu_check.synthetic_slide``, with the repository root on ``sys.path``."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("benchmarks.gpu_check.synthetic_slide")


def test_check_modules_import_without_napari_qt_dask(tmp_path: Path) -> None:
    env, writes = _environment(tmp_path)
    modules = [
        "napari_m2mrf", "napari_m2mrf.inference.fundus", "napari_m2mrf.inference.slide",
        "napari_m2mrf.catalog", "napari_m2mrf.inference.runner", "napari_m2mrf.io.workspace",
        "napari_m2mrf.models.registry", "training.cli", "training.loop",
    ]
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('imported')"
    result = subprocess.run([sys.executable, "-c", code, *modules], cwd=REPO, env={**env, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported" in result.stdout


def test_synthetic_slide_level_chunk_reads_agree_with_a_full_read() -> None:
    synthetic_slide = _synthetic_slide()
    level = synthetic_slide.SyntheticSlideLevel(4096, 4)
    assert level.shape == (3, 1024, 1024) and level.dtype == np.uint8 and level.chunks == (3, 512, 512)
    whole = level[:]
    assert whole.shape == (3, 1024, 1024)
    np.testing.assert_array_equal(level[:, 512:1024, 0:512], whole[:, 512:, :512])
    np.testing.assert_array_equal(level[1, 10:20, 30:40], whole[1, 10:20, 30:40])
    np.testing.assert_array_equal(np.asarray(level[...]), whole)
    assert whole.std() > 5  # tissue and background differ
    pyramid = synthetic_slide.synthetic_pyramid(4096, Path("unused"))
    assert pyramid.downsamples == [1.0, 2.0, 4.0, 8.0] and pyramid.shape == (3, 4096, 4096)


@pytest.mark.slow
def test_whole_check_runs_tiny_on_cpu_and_writes_only_under_out_dir(tmp_path: Path) -> None:
    env, writes = _environment(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out), "--tiny"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    log = result.stdout[-4000:] + result.stderr[-8000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["mode"] == "tiny", log
    assert summary["device"]["torch"] and summary["device"]["device_name"]
    assert list(summary["stages"]) == STAGES
    for stage in STAGES:
        record = summary["stages"][stage]
        assert record["ok"], (stage, record.get("error"), log)
        assert record["wall_s"] > 0
        assert record["figures"], stage
        assert json.loads((out / f"{stage}.json").read_text())["ok"]
    assert result.returncode == 0, log
    assert summary["figures"] and not summary["errors"]
    for name, value in summary["figures"].items():
        assert isinstance(value, (int, float)) and not isinstance(value, bool), name
        assert math.isfinite(value) and value > 0, (name, value)
    assert summary["stages"]["cuda_tests"]["figures"]["tests_collected"] >= 4
    assert {"fp32.vanilla.images_per_s", "autocast.D.time_ratio_to_vanilla"} <= {
        key.split(".", 1)[1] for key in summary["figures"] if key.startswith("inference.")}
    fundus = json.loads((out / "fundus.json").read_text())
    assert fundus["figures"]["iterations_done"] == 2 * 2  # two folds of two iterations
    assert all((out / "fundus" / f"fold{n}.safetensors").stat().st_size > 0 for n in (1, 2))
    assert (out / "fundus" / "recipe.yaml").is_file()
    report = json.loads((out / "fundus" / "cross_validation.json").read_text())
    held_out = [fold["held_out"] for fold in report["plain"]["per_fold"]]
    assert len(held_out) == 2 and sorted(sum(held_out, [])) == sorted(report["real_images"])  # each image scored once
    assert report["flips"]["pooled"]["images"] == len(report["real_images"])
    assert not (out / "scratch").exists()

    records = _records(writes)
    assert records, "the write audit recorded nothing"
    allowed = (str(out) + os.sep, str(writes), "/dev/")
    outside = sorted({path for kind, path in records if kind != "blocked-import" and not path.startswith(allowed)
                      and path != str(out)})
    assert not outside, outside
    assert not [p for p in (tmp_path / "sandbox").rglob("*") if p.is_file()], "nothing goes to HOME or the user cache"
