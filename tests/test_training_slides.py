"""Generated training slides: a reduced level of the sample slide's generator, readable by the trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from sample_data.slide_sample import generate_slide
from training.recipes.training_slides import (
    ensure_training_slides,
    reduced_slide,
    training_slide_path,
)
from training.slide_samples import SlideRecord, load_slide_sample, slide_classes


def test_reduced_slide_equals_the_level_of_the_written_pyramid(tmp_path: Path) -> None:
    written = generate_slide(tmp_path / "full", size=1024, seed=3)
    rgb, labels = reduced_slide(3, size=1024, reduction=1)
    root = zarr.open_group(str(written.ome_zarr), mode="r")
    np.testing.assert_array_equal(rgb, np.moveaxis(np.asarray(root["1"][:]), 0, -1))
    np.testing.assert_array_equal(labels, np.asarray(root["labels/ground_truth/1"][:]))
    assert rgb.shape == (512, 512, 3) and labels.any()


def test_training_slides_are_generated_once_and_read_by_the_trainer(tmp_path: Path) -> None:
    messages: list[str] = []
    (path,) = ensure_training_slides(tmp_path, [7], size=1024, reduction=1, log=messages.append)
    assert path == training_slide_path(tmp_path, 7) and len(messages) == 1
    again = ensure_training_slides(tmp_path, [7], size=1024, reduction=1, log=messages.append)
    assert again == [path] and len(messages) == 1
    record = SlideRecord(path, "ground_truth", 256)
    classes = slide_classes(record, ["tumour", "vessel", "necrosis"])
    sample = load_slide_sample(record, classes)
    assert sample.image.shape == (256, 256, 3)  # level 1 of the stored 512² pyramid
    assert set(np.unique(sample.target)) <= {0, 1, 2, 3} and sample.target.any()
