"""``napari-m2mrf convert``: pyramids from photographs and slides, ground truth carried over, progress bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_m2mrf.cli import main
from napari_m2mrf.io import Workspace, open_pyramid


def test_convert_a_tiled_tiff_with_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    y, x = np.mgrid[0:1500, 0:1100]
    image = np.dstack([x % 256, y % 256, (x + y) % 256]).astype(np.uint8)
    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, image, tile=(256, 256), photometric="rgb", compression="zlib", resolution=(20000, 20000),
                     resolutionunit="CENTIMETER")
    out = tmp_path / "scan.zarr"
    assert main(["convert", str(source), str(out), "--chunk", "256"]) == 0
    captured = capsys.readouterr()
    assert "100.0%" in captured.err and "MB/s" in captured.err and f"wrote {out}" in captured.out
    pyramid = open_pyramid(out)
    assert [level.shape for level in pyramid.levels] == [(3, 1500, 1100), (3, 750, 550), (3, 375, 275), (3, 188, 138)]
    assert pyramid.pixel_size_um == pytest.approx(0.5)
    assert np.array_equal(np.asarray(pyramid.levels[0][...]).transpose(1, 2, 0), image)
    assert main(["convert", str(source), str(out)]) == 2  # exists: not replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_convert_idrid_photograph_with_ground_truth_as_ngff_04(tmp_path: Path, shared_data: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    source = shared_data / "idrid_subset" / "1. Original Images" / "a. Training Set" / "IDRiD_08.jpg"
    out = tmp_path / "IDRiD_08.zarr"
    assert main(["convert", str(source), str(out), "--ngff", "0.4", "--quiet"]) == 0
    assert (out / ".zgroup").is_file()  # NGFF 0.4 is stored as zarr v2
    workspace = Workspace.open(out)
    truth = workspace.labels("ground_truth")
    assert truth.shape == (2848, 4288) and set(np.unique(truth.levels[-1][...])) <= {0, 1, 2, 3, 4}
    nodes = list(Reader(parse_url(str(out)))())
    assert tuple(nodes[0].data[0].shape) == (3, 2848, 4288)


def test_an_interrupted_conversion_resumes(tmp_path: Path) -> None:
    from napari_m2mrf.jobs import Cancelled, CancelToken

    image = np.random.default_rng(0).integers(0, 255, (3, 1024, 1024), dtype=np.uint8)
    out = tmp_path / "partial.zarr"
    workspace = Workspace.create(out, source=tmp_path / "scan.tif")
    cancel = CancelToken()
    cancel.set()
    with pytest.raises(Cancelled):
        workspace.write_image(image, chunk=128, cancel=cancel)
    assert not Workspace.open(out).has_image
    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, image.transpose(1, 2, 0), tile=(256, 256), photometric="rgb")
    assert main(["convert", str(source), str(out), "--chunk", "128", "--quiet"]) == 0
    assert np.array_equal(Workspace.open(out).image.levels[0][...], image)
