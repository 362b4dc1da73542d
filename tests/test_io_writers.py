"""Writers: IDRiD per-class masks, workspace labels, points CSV; napari writer functions; atomicity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_m2mrf.classes import FUNDUS_CLASSES, label_colormap
from napari_m2mrf.errors import UserError
from napari_m2mrf.io import Workspace, read_idrid_mask, read_points_csv, write_idrid_masks, write_points_csv
from napari_m2mrf.io.atomic import atomic_path, created_once
from napari_m2mrf.napari_io import write_idrid_masks_layer, write_points_csv_layer, write_workspace_labels_layer

LABELS = np.zeros((30, 40), np.uint8)
LABELS[2:6, 3:9] = 1
LABELS[10:12, 10:30] = 2
LABELS[20, 20] = 4


def test_idrid_masks_round_trip(tmp_path: Path) -> None:
    written = write_idrid_masks(LABELS, tmp_path, "IDRiD_55")
    assert [p.name for p in written] == ["IDRiD_55_EX.tif", "IDRiD_55_HE.tif", "IDRiD_55_SE.tif", "IDRiD_55_MA.tif"]
    for cls, path in zip(FUNDUS_CLASSES, written, strict=True):
        assert np.array_equal(read_idrid_mask(path), LABELS == cls.label)


def test_idrid_masks_reject_unknown_labels(tmp_path: Path) -> None:
    bad = LABELS.copy()
    bad[0, 0] = 9
    with pytest.raises(UserError, match=r"label values \[9\]"):
        write_idrid_masks(bad, tmp_path, "x")
    assert list(tmp_path.iterdir()) == []


def test_napari_idrid_writer_names_masks_after_the_image(tmp_path: Path) -> None:
    written = write_idrid_masks_layer(str(tmp_path / "IDRiD_07.tif"), LABELS, {"name": "IDRiD_07 prediction"})
    assert sorted(Path(p).name for p in written) == sorted(f"IDRiD_07_{c.code}.tif" for c in FUNDUS_CLASSES)
    into_folder = write_idrid_masks_layer(str(tmp_path / "out"), LABELS, {"name": "IDRiD_08 ground truth"})
    assert Path(into_folder[0]) == tmp_path / "out" / "IDRiD_08_EX.tif"


def test_napari_workspace_writer_builds_a_label_pyramid(tmp_path: Path) -> None:
    from napari.utils.colormaps import DirectLabelColormap

    colormap = DirectLabelColormap(color_dict=label_colormap())
    target = tmp_path / "eye.m2mrf.zarr"
    written = write_workspace_labels_layer(str(target), LABELS, {"name": "Corrected", "colormap": colormap})
    assert written == [str(target / "labels" / "corrected")]
    stored = Workspace.open(target).labels("corrected")
    assert np.array_equal(stored.levels[0][...], LABELS)
    assert stored.colors[2] == pytest.approx((0.0, 1.0, 0.0, 1.0))


def test_points_csv_in_level0_pixels(tmp_path: Path) -> None:
    # A points layer drawn on a slide shown at 0.25 µm per pixel: data in level-0 pixels, scale 0.25.
    data = np.array([[10.0, 20.0], [1000.5, 2000.25]])
    meta = {"scale": [0.25, 0.25], "translate": [0.0, 0.0], "features": {"kind": ["a", "b"]}}
    written = write_points_csv_layer(str(tmp_path / "points.csv"), data, meta)
    assert np.allclose(read_points_csv(written[0]), data)
    assert (tmp_path / "points.csv").read_text().splitlines()[0] == "y_px,x_px,kind"
    # The same points in a layer whose data are in µm (scale 1) but which says its pixel size.
    in_um = write_points_csv_layer(str(tmp_path / "um.csv"), data * 0.25, {"metadata": {"pixel_size_um": 0.25}})
    assert np.allclose(read_points_csv(in_um[0]), data)


def test_points_csv_rejects_nan(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="NaN"):
        write_points_csv(np.array([[np.nan, 1.0]]), tmp_path / "p.csv")


def test_a_crash_during_a_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "points.csv"
    write_points_csv(np.array([[1.0, 2.0]]), target)
    before = target.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("y_px,x_px\n5")  # half-written
            raise KeyboardInterrupt
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["points.csv"]


def test_a_folder_created_once_keeps_the_one_made_first(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "made"
    with created_once(folder) as scratch:
        scratch.mkdir(parents=True)
        (scratch / "first").write_text("1")
    with created_once(folder) as scratch:  # another process's, finishing second
        scratch.mkdir()
        (scratch / "second").write_text("2")
    assert [p.name for p in folder.iterdir()] == ["first"]
    assert [p.name for p in folder.parent.iterdir()] == ["made"]  # no scratch left


def test_a_folder_created_once_raises_what_went_wrong_when_none_was_made(tmp_path: Path) -> None:
    folder = tmp_path / "made"
    with pytest.raises(PermissionError):
        with created_once(folder, made=folder / "store") as scratch:
            scratch.mkdir()
            raise PermissionError("disk said no")
    with pytest.raises(OSError):
        with created_once(folder, made=folder / "store") as scratch:  # a folder there, but not the one made
            folder.mkdir()
            (folder / "stray").write_text("x")
            scratch.mkdir()
    assert [p.name for p in tmp_path.iterdir()] == ["made"]
