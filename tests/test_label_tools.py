"""Label editing operations: connected component under a click, small components."""

from __future__ import annotations

import numpy as np

from napari_m2mrf.label_tools import component_at, small_components


def _labels() -> np.ndarray:
    labels = np.zeros((20, 20), np.uint8)
    labels[2:6, 2:6] = 1  # 16 px EX
    labels[6, 6] = 1  # touches the block diagonally
    labels[10:12, 10:12] = 4  # 4 px MA
    labels[10:12, 12:14] = 2  # 4 px HE next to it: another class, another component
    labels[18, 18] = 4  # 1 px MA
    return labels


def test_component_under_a_click_follows_eight_neighbours_of_one_class() -> None:
    labels = _labels()
    rows, cols = component_at(labels, (3.2, 2.9))
    assert len(rows) == 17 and (labels[rows, cols] == 1).all()
    rows, cols = component_at(labels, (10, 11))
    assert set(zip(rows.tolist(), cols.tolist())) == {(10, 10), (10, 11), (11, 10), (11, 11)}
    assert len(component_at(labels, (3, 3), connectivity=1)[0]) == 16


def test_click_on_background_or_outside_selects_nothing() -> None:
    labels = _labels()
    assert component_at(labels, (0, 0)) is None
    assert component_at(labels, (-1, 5)) is None
    assert component_at(labels, (5, 25)) is None


def test_small_components_are_found_per_class() -> None:
    labels = _labels()
    rows, cols = small_components(labels, min_size=5)
    removed = set(zip(rows.tolist(), cols.tolist()))
    assert (18, 18) in removed and (10, 10) in removed and (10, 12) in removed
    assert (3, 3) not in removed and (6, 6) not in removed
    assert len(removed) == 9
