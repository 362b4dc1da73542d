"""The bundled default models: shipped small, loadable offline, with the config that retrains them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_m2mrf.catalog import BUNDLED_DIR, bundled_models, resolve_model
from training.config import load_config

FUNDUS = "fundus_m2mrf_w18s"


def test_fundus_model_is_bundled_small_and_has_its_training_config() -> None:
    path = bundled_models()[FUNDUS]
    assert path.stat().st_size < 6 * 2**20
    config = load_config(BUNDLED_DIR / f"{FUNDUS}.yaml")
    assert config.model.name == "m2mrf_hrnetv2_w18s" and config.model.options["variant"] == "A"
    model, meta = resolve_model(FUNDUS)
    trained = meta["provenance"]["config"]  # the run that made the weights: the recipe, its own data and output paths
    recipe = config.to_dict()
    for section in ("augment", "loss", "optim"):
        assert trained[section] == recipe[section], section
    started_from = trained["model"].pop("init_checkpoint", "")  # the fold's own stage-1 weights (an absolute path there)
    assert trained["model"] == {k: v for k, v in recipe["model"].items() if k != "init_checkpoint"}
    assert bool(started_from) == bool(recipe["model"].get("init_checkpoint"))
    assert trained["data"]["root"] == config.data.root and trained["run"]["iterations"] == config.run.iterations
    assert meta["arch"] == "m2mrf_hrnetv2_w18s" and meta["weights_dtype"] == "int8"
    assert set(meta["thresholds"]) == {"EX", "HE", "SE", "MA"}
    assert all(0.01 <= value <= 0.99 for value in meta["thresholds"].values())
    assert [c["code"] for c in meta["classes"]] == ["EX", "HE", "SE", "MA"]
    assert meta["provenance"]["trained_iterations"] == config.run.iterations


def test_fundus_model_carries_its_cross_validated_figures() -> None:
    """The README quotes these: pooled over the real images, each scored by a fold model that never saw it."""
    _, meta = resolve_model(FUNDUS)
    summary = meta["provenance"]["cross_validation"]
    assert summary["folds"] == 2 and len(summary["real_images"]) == 10 and summary["extra_images"] == 34
    for variant in {"plain"} | ({"flips"} & set(summary)):
        per_class = summary[variant]["per_class"]
        assert set(per_class) == {"EX", "HE", "SE", "MA"}
        assert all(0 <= scores["aupr_official_11pt"] <= 1 for scores in per_class.values())
    assert summary["plain"]["per_class"]["HE"]["aupr_official_11pt"] >= 0.20
    assert "cross-validation" in meta["provenance"]["validation"]["note"]


def test_fundus_model_carries_test_time_scales_chosen_by_cross_validation() -> None:
    """The scales mode (predict's default, a Segment region) runs each class at the scales the
    cross-validation chose, with thresholds calibrated on them; the cross-fitted figures are recorded."""
    from napari_m2mrf.models.multiscale import class_scales, has_class_scales, multiscale_thresholds

    _, meta = resolve_model(FUNDUS)
    assert has_class_scales(meta)
    scales = class_scales(meta)
    assert len(scales) == 4 and all(scales) and any(channel != (1.0,) for channel in scales)
    assert set(multiscale_thresholds(meta)) == {"EX", "HE", "SE", "MA"}
    figures = meta["provenance"]["test_time"]
    assert set(figures["cross_fitted_aupr_official_11pt"]) == {"EX", "HE", "SE", "MA"}
    assert len(figures["chosen_per_fold"]) == 2  # one choice per fold, each made on the other fold
    assert figures["cross_fitted_aupr_official_11pt"]["MA"] >= 0.15


def test_fundus_model_segments_an_image_into_four_probability_maps() -> None:
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing
    from sample_data.skimage_samples import retina

    model, meta = resolve_model(FUNDUS)
    image = retina()[::4, ::4]
    probabilities = FundusPredictor(model, Preprocessing.from_meta(meta), "cpu").predict_whole(image)
    assert probabilities.shape == (4, *image.shape[:2])
    assert np.isfinite(probabilities).all() and 0 <= probabilities.min() and probabilities.max() <= 1


def test_fundus_model_marks_almost_nothing_on_the_normal_retina() -> None:
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing
    from sample_data.skimage_samples import retina

    model, meta = resolve_model(FUNDUS)
    probabilities = FundusPredictor(model, Preprocessing.from_meta(meta), "cpu").predict_whole(retina())
    for k, code in enumerate(("EX", "HE", "SE", "MA")):
        marked = float(np.mean(probabilities[k] >= meta["thresholds"][code]))
        assert marked < 0.01, f"{code}: {marked:.2%} of the normal retina marked"
        assert marked == pytest.approx(meta["provenance"]["retina_lesion_fraction"][code], abs=1e-3)


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_every_bundled_checkpoint_has_a_config_beside_it(name: str) -> None:
    assert (BUNDLED_DIR / f"{name}.yaml").is_file()
