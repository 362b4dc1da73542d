"""A fundus model's test-time scales in its checkpoint metadata: parsed per class, refused clearly when
malformed (also when the checkpoint is loaded), and thresholds calibrated on them with the plain
ones as fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from napari_m2mrf.errors import UserError
from napari_m2mrf.models import build_model, fundus_metadata, load_checkpoint, save_checkpoint
from napari_m2mrf.models.checkpoints import METADATA_KEY
from napari_m2mrf.models.multiscale import class_scales, has_class_scales, multiscale_thresholds


def _meta(test_time: object, thresholds: dict | None = None) -> dict:
    meta = {**fundus_metadata("idrid"), "test_time": test_time}
    if thresholds is not None:
        meta["thresholds"] = thresholds
    return meta


def test_scales_per_channel_with_one_for_classes_left_out() -> None:
    meta = _meta({"scales": {"MA": [1.5, 1.0, 1.5], "EX": [1.25]}})
    assert has_class_scales(meta)
    assert class_scales(meta) == [(1.25,), (1.0,), (1.0,), (1.0, 1.5)]
    assert not has_class_scales(fundus_metadata("idrid"))
    assert class_scales(fundus_metadata("idrid")) == [(1.0,)] * 4


def test_thresholds_of_the_scales_fall_back_to_the_plain_ones() -> None:
    meta = _meta({"scales": {"MA": [1.5]}, "thresholds": {"MA": 0.2, "SE": float("nan")}}, {"EX": 0.3, "SE": 0.4})
    assert multiscale_thresholds(meta) == {"EX": 0.3, "HE": 0.5, "SE": 0.4, "MA": 0.2}


@pytest.mark.parametrize("test_time, message", [
    ("1.5", "must be a mapping"),
    ({"scales": [1.5]}, "must map class codes"),
    ({"scales": {"XX": [1.0]}}, "must map class codes"),
    ({"scales": {"MA": []}}, "non-empty list"),
    ({"scales": {"MA": 1.5}}, "non-empty list"),
    ({"scales": {"MA": [float("nan")]}}, "non-empty list"),
    ({"scales": {"MA": [0.0]}}, "non-empty list"),
    ({"scales": {"MA": [100]}}, "non-empty list"),
    ({"scales": {"MA": [True]}}, "non-empty list"),
    ({"scales": {"MA": ["1.5"]}}, "non-empty list"),
    ({"scales": {"MA": [1.5]}, "thresholds": {"MA": 1.5}}, "between 0 and 1"),
    ({"scales": {"MA": [1.5]}, "thresholds": [0.2]}, "must map class codes"),
])
def test_malformed_test_time_metadata_is_refused_on_save_and_load(tmp_path: Path, test_time: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        class_scales(_meta(test_time)) and multiscale_thresholds(_meta(test_time))
    model = build_model("hrnetv2_w18s", num_classes=4)
    with pytest.raises(UserError, match=message):
        save_checkpoint(tmp_path / "refused.safetensors", model, _meta(test_time))
    path = tmp_path / "bad.safetensors"  # written by another tool: the header carries the bad entry
    good = save_checkpoint(path, model, fundus_metadata("idrid"))
    with safe_open(path, "pt") as stored:
        tensors = {name: stored.get_tensor(name) for name in stored.keys()}
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps({**good, "test_time": test_time})})
    with pytest.raises(UserError, match=f"bad.safetensors: .*{message}"):
        load_checkpoint(path)
