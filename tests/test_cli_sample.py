"""``napari-m2mrf sample``: data sets written to a folder, impossible sizes rejected in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from napari_m2mrf.io.idrid_masks import read_idrid_mask

CLI = str(Path(sys.executable).with_name("napari-m2mrf"))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "sample", *args], capture_output=True, text=True, timeout=300)


def test_fundus_lesions_dataset_in_idrid_layout(tmp_path: Path) -> None:
    result = _run("fundus_lesions", str(tmp_path / "data"), "-n", "2", "--scale", "0.5")
    assert result.returncode == 0, result.stderr
    images = sorted((tmp_path / "data" / "1. Original Images" / "a. Training Set").glob("*.jpg"))
    assert len(images) == 2
    masks = sorted((tmp_path / "data" / "2. All Segmentation Groundtruths" / "a. Training Set" / "1. Microaneurysms").glob("*.tif"))
    assert len(masks) == 2 and read_idrid_mask(masks[0]).any()


def test_small_slide_as_ome_zarr_and_ome_tiff(tmp_path: Path) -> None:
    result = _run("slide", str(tmp_path / "slide"), "--size", "1024")
    assert result.returncode == 0, result.stderr
    assert "slide.ome.zarr" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("slide", "OUT", "--size", "1000"), "multiple of 512"),
        (("slide", "OUT", "--size", "-512"), "multiple of 512"),
        (("fundus_lesions", "OUT", "-n", "-3"), "number of images"),
        (("fundus_lesions", "OUT", "--scale", "1000"), "scale"),
    ],
)
def test_impossible_sizes_are_one_line_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = _run(*[str(tmp_path / a) if a == "OUT" else a for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
