"""The lesion inventory core (no Qt): components per class, areas, centroids, mean probability, pixel
sizes and their sources, area units, CSV columns."""

from __future__ import annotations

import csv
import threading
import time

import numpy as np
import pytest

from napari_m2mrf.jobs import CancelToken, Cancelled
from napari_m2mrf.lesion_inventory import (
    ACCEPTED,
    CSV_COLUMNS,
    PixelSize,
    component_indices,
    lesion_inventory,
    pixel_size_from,
    write_inventory_csv,
)


def _labels() -> np.ndarray:
    labels = np.zeros((100, 120), np.uint8)
    labels[10:20, 10:30] = 1  # EX, 200 px, centroid (14.5, 19.5)
    labels[50:54, 60:64] = 1  # EX, 16 px, centroid (51.5, 61.5)
    labels[20:30, 30:40] = 2  # HE touching the first EX diagonally at (19, 29)/(20, 30): its own lesion
    labels[80, 100] = 4  # MA, 1 px
    labels[81, 101] = 4  # diagonal neighbour: the same MA (8-connectivity)
    return labels


def test_components_per_class_with_areas_centroids_and_boxes() -> None:
    inventory = lesion_inventory(_labels())
    assert inventory.counts() == {"EX": 2, "HE": 1, "SE": 0, "MA": 1}
    by_code = {}
    for lesion in inventory.lesions:
        by_code.setdefault(lesion.code, []).append(lesion)
    big, small = by_code["EX"]  # largest first within a class
    assert (big.area_px, small.area_px) == (200, 16)
    assert big.centroid == pytest.approx((14.5, 19.5)) and small.centroid == pytest.approx((51.5, 61.5))
    assert big.bbox == (10, 10, 20, 30)
    (he,) = by_code["HE"]
    assert he.area_px == 100 and he.centroid == pytest.approx((24.5, 34.5))
    (ma,) = by_code["MA"]
    assert ma.area_px == 2 and ma.centroid == pytest.approx((80.5, 100.5))
    assert [lesion.id for lesion in inventory.lesions] == [1, 2, 3, 4]
    assert all(lesion.mean_probability is None for lesion in inventory.lesions)
    assert inventory.area(big) is None  # no pixel size


def test_empty_and_unknown_labels() -> None:
    assert lesion_inventory(np.zeros((5, 5), np.uint8)).lesions == ()
    labels = np.zeros((5, 5), np.int32)
    labels[1, 1] = 9
    (lesion,) = lesion_inventory(labels).lesions
    assert lesion.code == "label 9"
    with pytest.raises(ValueError, match="2-D"):
        lesion_inventory(np.zeros((2, 5, 5), np.uint8))


def test_mean_probability_of_each_lesion_uses_its_own_class_map() -> None:
    labels = _labels()
    ex = np.zeros(labels.shape, np.float32)
    ex[10:20, 10:20] = 0.8  # half of the big EX at 0.8, the other half at 0.4
    ex[10:20, 20:30] = 0.4
    ex[50:54, 60:64] = 1.0
    ex[20:30, 30:40] = 0.123  # under the HE lesion: must not leak into HE's mean
    he = np.full(labels.shape, 0.25, np.float16)
    inventory = lesion_inventory(labels, probabilities={1: ex, 2: he, 4: np.zeros((3, 3))})  # wrong shape: ignored
    means = {(l.code, l.area_px): l.mean_probability for l in inventory.lesions}
    assert means[("EX", 200)] == pytest.approx(0.6)
    assert means[("EX", 16)] == pytest.approx(1.0)
    assert means[("HE", 100)] == pytest.approx(0.25)
    assert means[("MA", 2)] is None


def test_physical_areas_in_mm2_for_fundus_and_um2_for_microscopy() -> None:
    fundus = lesion_inventory(_labels(), pixel_size=PixelSize(10.0, "entered"))
    big = fundus.lesions[0]
    assert fundus.pixel_size.area_unit == "mm²"
    assert fundus.area(big) == pytest.approx(200 * 100 * 1e-6)  # 200 px of 10 µm × 10 µm = 0.02 mm²
    slide = lesion_inventory(_labels(), pixel_size=PixelSize(0.25, "layer metadata"))
    assert slide.pixel_size.area_unit == "µm²"
    assert slide.area(slide.lesions[0]) == pytest.approx(200 * 0.0625)


def test_pixel_size_sources_in_order() -> None:
    assert pixel_size_from(entered_um=7.0, layer_metadata={"pixel_size_um": 1.0}) == PixelSize(7.0, "entered")
    assert pixel_size_from(entered_um=0.0, layer_metadata={"pixel_size_um": 0.5}) == PixelSize(0.5, "layer metadata")
    assert pixel_size_from(layer_metadata={}, image_metadata={"pixel_size_um": 0.25}) == PixelSize(0.25, "image layer metadata")
    assert pixel_size_from(scale=[2.0, 2.0], units=["mm", "mm"]) == PixelSize(2000.0, "layer scale (mm)")
    assert pixel_size_from(scale=[0.5, 0.5], units=["micrometer", "micrometer"]).um == 0.5
    assert pixel_size_from(scale=[0.5, 0.5], units=["pixel", "pixel"]) == PixelSize(0.5, "layer scale (taken as µm)")
    assert pixel_size_from(scale=[1.0, 1.0], units=["pixel", "pixel"]) is None
    assert pixel_size_from(scale=[1.0, 2.0]) is None  # not square
    assert pixel_size_from(layer_metadata={"pixel_size_um": float("nan")}) is None


def test_component_indices_finds_exactly_the_lesion() -> None:
    labels = _labels()
    inventory = lesion_inventory(labels)
    he = next(l for l in inventory.lesions if l.code == "HE")
    rows, cols = component_indices(labels, he)
    assert rows.size == 100 and (labels[rows, cols] == 2).all()
    labels[rows, cols] = 0
    assert component_indices(labels, he)[0].size == 0


def test_csv_has_the_documented_columns_and_statuses(tmp_path) -> None:
    inventory = lesion_inventory(_labels(), pixel_size=PixelSize(10.0, "entered"))
    first = inventory.lesions[0]
    path = write_inventory_csv(tmp_path / "lesions.csv", inventory, {first.key: ACCEPTED})
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == 4
    assert rows[0]["class"] == "EX" and rows[0]["class_name"] == "Hard exudates"
    assert int(rows[0]["area_px"]) == 200
    assert float(rows[0]["area_mm2"]) == pytest.approx(0.02) and float(rows[0]["area_um2"]) == pytest.approx(20000)
    assert float(rows[0]["centroid_row"]) == pytest.approx(14.5) and float(rows[0]["centroid_col"]) == pytest.approx(19.5)
    assert rows[0]["status"] == "accepted" and rows[1]["status"] == "pending"
    assert rows[0]["mean_probability"] == ""
    subset = write_inventory_csv(tmp_path / "ma.csv", inventory, lesions=[inventory.lesions[-1]])
    assert subset.read_text().count("\n") == 2


def test_cancel_is_checked_between_classes() -> None:
    token = CancelToken()
    token.set()
    with pytest.raises(Cancelled):
        lesion_inventory(_labels(), cancel=token)


def test_a_fundus_sized_mask_holds_the_gil_briefly() -> None:
    """4288×2848 with ~2000 lesions: another Python thread (the GUI) is never held off for long."""
    rng = np.random.default_rng(0)
    labels = np.zeros((2848, 4288), np.uint8)
    for _ in range(2000):
        r, c, s = rng.integers(0, 2800), rng.integers(0, 4240), rng.integers(2, 40)
        labels[r:r + s, c:c + s] = rng.integers(1, 5)
    ticks, done = [], threading.Event()

    def tick() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.005)

    thread = threading.Thread(target=tick)
    thread.start()
    try:
        inventory = lesion_inventory(labels)
    finally:
        done.set()
        thread.join()
    assert len(inventory.lesions) > 1000
    assert np.diff(ticks).max() < 0.25, f"longest hold {np.diff(ticks).max() * 1000:.0f} ms"
