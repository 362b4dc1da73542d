"""The bundled default models: shipped small, loadable offline, with the config that retrains them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_m2mrf.inference.model_source import BUNDLED_DIR, bundled_models, resolve_model
from training.config import load_config

FUNDUS = "fundus_m2mrf_w18s"


def test_fundus_model_is_bundled_small_and_has_its_training_config() -> None:
    path = bundled_models()[FUNDUS]
    assert path.stat().st_size < 10 * 2**20
    config = load_config(BUNDLED_DIR / f"{FUNDUS}.yaml")
    assert config.model.name == "m2mrf_hrnetv2_w18s" and config.model.options["variant"] == "A"
    model, meta = resolve_model(FUNDUS)
    assert meta["arch"] == "m2mrf_hrnetv2_w18s" and meta["weights_dtype"] == "float16"
    assert [c["code"] for c in meta["classes"]] == ["EX", "HE", "SE", "MA"]
    assert meta["provenance"]["trained_iterations"] > 0 and meta["provenance"]["config"]["model"]["name"] == config.model.name


def test_fundus_model_segments_an_image_into_four_probability_maps() -> None:
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing
    from sample_data.skimage_samples import retina

    model, meta = resolve_model(FUNDUS)
    image = retina()[::4, ::4]
    probabilities = FundusPredictor(model, Preprocessing.from_meta(meta), "cpu").predict_whole(image)
    assert probabilities.shape == (4, *image.shape[:2])
    assert np.isfinite(probabilities).all() and 0 <= probabilities.min() and probabilities.max() <= 1


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_every_bundled_checkpoint_has_a_config_beside_it(name: str) -> None:
    assert (BUNDLED_DIR / f"{name}.yaml").is_file()
