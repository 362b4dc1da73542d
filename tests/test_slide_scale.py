"""A slide model sees a slide at the µm per sample it was trained at (issue 14.4: the slide's pixel size
drives the model's input scale): the checkpoint records its training scale, inference picks the
sample grid from it and the slide's µm/px, on real slide files, through the API and the CLI."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from safetensors import safe_open
from slide_helpers import save_slide_model

sys.path.insert(0, str(Path(__file__).parent))
from slide_formats import pattern, write_aperio_jp2k  # noqa: E402

from napari_m2mrf.catalog import resolve  # noqa: E402
from napari_m2mrf.cli import main  # noqa: E402
from napari_m2mrf.errors import UserError  # noqa: E402
from napari_m2mrf.inference.slide import SlideRequest, run_slide_segmentation, segment_slide  # noqa: E402
from napari_m2mrf.inference.slide_scale import choose_grid  # noqa: E402
from napari_m2mrf.io.slides import open_pyramid  # noqa: E402
from napari_m2mrf.io.workspace import Workspace  # noqa: E402
from napari_m2mrf.models.checkpoints import (  # noqa: E402
    load_checkpoint,
    read_checkpoint_metadata,
    update_checkpoint_metadata,
)
from napari_m2mrf.models.training_scale import TrainingScale, training_scale  # noqa: E402

DEFAULT = (64, 64)  # the test model's grid (save_slide_model)
TRAINED = TrainingScale(pixel_size_um=(0.5, 0.5), um_per_sample=4.0, um_per_sample_range=(3.5, 4.5), slides=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 600×700 content as an SVS at 0.5 and at 0.25 µm/px, as a tiled TIFF without a pixel size,
    and a model with the training scale ``TRAINED`` and one without any."""
    root = tmp_path_factory.mktemp("scale")
    coarse, fine = root / "coarse", root / "fine"
    coarse.mkdir(), fine.mkdir()
    unknown = root / "unknown.tif"
    tifffile.imwrite(unknown, pattern(600, 700), tile=(256, 256), photometric="rgb", metadata=None)
    return {
        "coarse": write_aperio_jp2k(coarse, pixel_size_um=0.5).path,
        "fine": write_aperio_jp2k(fine, pixel_size_um=0.25).path,
        "unknown": unknown,
        "scaled_model": save_slide_model(root / "scaled.safetensors", DEFAULT, training_scale=TRAINED.to_json()),
        "plain_model": save_slide_model(root / "plain.safetensors", DEFAULT),
    }


def _lazy(source: Path, model: Path, workspace: Path, **kwargs):
    return segment_slide(source, SlideRequest(str(model), device="cpu", workspace=workspace, **kwargs))


def test_the_same_slide_at_half_the_pixel_size_gets_half_the_grid_per_side(files, tmp_path) -> None:
    assert open_pyramid(files["coarse"]).pixel_size_um == 0.5 and open_pyramid(files["fine"]).pixel_size_um == 0.25
    coarse = _lazy(files["coarse"], files["scaled_model"], tmp_path / "a.m2mrf.zarr")
    fine = _lazy(files["fine"], files["scaled_model"], tmp_path / "b.m2mrf.zarr")
    # 600×700 px at 0.5 µm = 300×350 µm at 4 µm per sample: 75×88 samples; at 0.25 µm half as many per side
    assert coarse.labels.shape == (75, 88) and coarse.points.shape == (75, 88, 2)
    assert fine.labels.shape == (38, 44)
    for result in (coarse, fine):
        assert result.grid.choice == "matched" and result.grid.um_per_sample == pytest.approx(4.0, rel=0.02)
        assert result.grid.notice() is None


def test_provenance_records_pixel_size_spacing_and_why(files, tmp_path) -> None:
    workspace = tmp_path / "w.m2mrf.zarr"
    result = run_slide_segmentation(files["coarse"], SlideRequest(str(files["scaled_model"]), device="cpu",
                                                                  workspace=workspace))
    scale = Workspace.open(workspace, mode="r").provenance["input_scale"]
    assert scale == result.grid.provenance()
    assert scale["slide_pixel_size_um"] == 0.5 and scale["um_per_sample"] == pytest.approx(math.sqrt(300 * 350 / (75 * 88)))
    assert scale["training_um_per_sample"] == 4.0 and scale["training_um_per_sample_range"] == [3.5, 4.5]
    assert scale["output_size"] == [75, 88] and scale["default_output_size"] == list(DEFAULT)
    assert scale["choice"] == "matched" and "as in training" in scale["reason"]
    assert Workspace.open(workspace, mode="r").provenance["output_size"] == [75, 88]


def test_unknown_pixel_size_or_training_scale_keeps_the_checkpoint_grid(files, tmp_path) -> None:
    assert open_pyramid(files["unknown"]).pixel_size_um is None
    unknown = _lazy(files["unknown"], files["scaled_model"], tmp_path / "u.m2mrf.zarr")
    assert unknown.labels.shape == DEFAULT and unknown.grid.choice == "default"
    assert "pixel size is unknown" in unknown.grid.reason and unknown.grid.provenance()["um_per_sample"] is None
    plain = _lazy(files["coarse"], files["plain_model"], tmp_path / "p.m2mrf.zarr")
    assert plain.labels.shape == DEFAULT and "no training scale" in plain.grid.reason
    # the spacing is still recorded: 300×350 µm over 64×64 samples
    assert plain.grid.provenance()["um_per_sample"] == pytest.approx(math.sqrt(300 * 350) / 64)


def test_an_explicit_output_size_wins_and_a_far_scale_is_noticed(files, tmp_path) -> None:
    notices: list[str] = []
    request = SlideRequest(str(files["scaled_model"]), device="cpu", workspace=tmp_path / "e.m2mrf.zarr",
                           output_size=(40, 56))
    result = segment_slide(files["coarse"], request, notify=notices.append)
    assert result.labels.shape == (40, 56) and result.grid.choice == "explicit" and notices == []
    request.output_size = (8, 8)  # 300×350 µm over 8×8: about 40 µm per sample, 10× coarser than training
    far = segment_slide(files["coarse"], request, notify=notices.append)
    assert far.labels.shape == (8, 8) and far.grid.off_training > 2
    assert len(notices) == 1 and "coarser than the 4 µm the model was trained at" in notices[0]


def test_grid_is_clamped_to_half_and_twice_the_checkpoint_grid() -> None:
    large = choose_grid(DEFAULT, (6000, 7000), 0.5, TRAINED)  # wants 750×875 samples
    assert large.output_size == (128, 128) and large.choice == "clamped"
    assert large.off_training == pytest.approx(math.sqrt(3000 * 3500) / 128 / 4.0) and large.notice() is not None
    small = choose_grid(DEFAULT, (60, 7000), 0.5, TRAINED)  # wants 8×875 samples
    assert small.output_size == (32, 128) and small.choice == "clamped"
    matched = choose_grid(DEFAULT, (512, 512), 0.5, TRAINED)
    assert matched.output_size == (64, 64) and matched.choice == "matched" and matched.notice() is None


@pytest.mark.parametrize("pixel_size", [0.0, -0.5, float("nan"), float("inf")])
def test_a_pixel_size_that_is_not_a_positive_number_counts_as_unknown(pixel_size: float) -> None:
    grid = choose_grid(DEFAULT, (512, 512), pixel_size, TRAINED)
    assert grid.output_size == DEFAULT and grid.choice == "default" and grid.slide_pixel_size_um is None
    assert grid.notice() is None and grid.provenance()["um_per_sample"] is None


def test_predict_cli_records_the_scale_and_takes_an_output_size(files, tmp_path, capsys) -> None:
    model = str(files["scaled_model"])
    assert main(["predict", str(files["fine"]), "--model", model, "--out", str(tmp_path / "a"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["samples"] == 38 * 44 and summary["input_scale"]["choice"] == "matched"
    assert summary["scale_notice"] is None
    code = main(["predict", str(files["fine"]), "--model", model, "--out", str(tmp_path / "b"),
                 "--output-size", "96", "96"])
    captured = capsys.readouterr()
    assert code == 0 and f"{96 * 96} samples" in captured.out
    # 150×175 µm over 96×96 samples: about 1.7 µm per sample, 2.4× finer than training: said on stderr
    assert "finer than the 4 µm the model was trained at" in captured.err
    provenance = Workspace.open(tmp_path / "b" / "aperio_33003.m2mrf.zarr", mode="r").provenance
    assert provenance["input_scale"]["choice"] == "explicit" and provenance["output_size"] == [96, 96]
    assert main(["predict", str(files["fine"]), "--model", model, "--out", str(tmp_path / "c"),
                 "--output-size", "0", "9"]) == 2
    assert "--output-size must be two sides between" in capsys.readouterr().err


def test_training_scale_round_trips_and_a_bad_one_is_refused(files, tmp_path) -> None:
    meta = read_checkpoint_metadata(files["scaled_model"])
    assert training_scale(meta) == TRAINED
    _, loaded = load_checkpoint(files["scaled_model"])
    assert training_scale(loaded) == TRAINED
    assert training_scale(read_checkpoint_metadata(files["plain_model"])) is None  # an older checkpoint loads
    load_checkpoint(files["plain_model"])
    for bad in ({**TRAINED.to_json(), "um_per_sample": 9.0}, {**TRAINED.to_json(), "pixel_size_um": [-1, 1]},
                {**TRAINED.to_json(), "slides": 0}, "4 µm"):
        with pytest.raises(UserError, match="training_scale"):
            save_slide_model(tmp_path / "bad.safetensors", DEFAULT, training_scale=bad)


def test_metadata_update_keeps_the_stored_tensors(files, tmp_path) -> None:
    path = shutil.copy(files["plain_model"], tmp_path / "model.safetensors")
    update_checkpoint_metadata(path, {"training_scale": TRAINED.to_json()})
    before, after = read_checkpoint_metadata(files["plain_model"]), read_checkpoint_metadata(path)
    assert training_scale(after) == TRAINED and after["weights_sha256"] == before["weights_sha256"]
    with safe_open(str(files["plain_model"]), "pt") as old, safe_open(str(path), "pt") as new:
        assert set(old.keys()) == set(new.keys())
        for name in old.keys():
            assert torch.equal(old.get_tensor(name), new.get_tensor(name))
    with pytest.raises(ValueError, match="arch"):
        update_checkpoint_metadata(path, {"arch": "hrnetv2_w48"})
    load_checkpoint(path)


def test_bundled_slide_model_records_its_scale_and_keeps_the_sample_slide_grid() -> None:
    from sample_data.slide_sample import PIXEL_SIZE_UM, SAMPLE_SIZE

    ref = resolve("slide_deformed_w18s")
    scale = training_scale(ref.metadata)
    default = tuple(ref.metadata["deformed"]["output_size"])
    # generated 32768² slides at 0.25 µm stored at level 4 (2048² at 4 µm), read at 1024², 128×128 samples
    assert scale == TrainingScale((4.0, 4.0), 64.0, (64.0, 64.0), 8)
    grid = choose_grid(default, (SAMPLE_SIZE, SAMPLE_SIZE), PIXEL_SIZE_UM, scale)
    assert grid.output_size == default == (128, 128) and grid.choice == "matched"  # the demo's budget


def test_trainer_records_the_training_scale_of_its_slides(tmp_path) -> None:
    from napari_m2mrf.classes import LesionClass
    from napari_m2mrf.models import build_model
    from training.checkpointing import export_model, model_metadata
    from training.config import TrainingConfig
    from training.networks import deformed
    from training.recipes.training_slides import training_slide_geometry, write_training_slide
    from training.slide_scale import slide_geometry
    from training.slide_scale import training_scale as scale_of_run

    path = write_training_slide(tmp_path / "slide.ome.zarr", seed=7, size=1024, reduction=1)  # 512² at 0.5 µm
    assert slide_geometry(path) == training_slide_geometry(size=1024, reduction=1)
    config = TrainingConfig()
    config.data.kind, config.data.slides, config.data.slide_level_size = "slides", [str(path)], 256
    config.augment.resize, config.augment.crop, config.augment.scale_range = [256, 256], [256, 256], [1.0, 1.0]
    config.model.name, config.model.options = "hrnetv2_w18s", {}
    config.deform.enabled, config.deform.output_size, config.deform.sigma = True, [32, 32], 3.0
    scale = scale_of_run(config)  # 256 µm of slide in 256² input pixels, 32 samples per side: 8 µm per sample
    assert scale == TrainingScale((0.5, 0.5), 8.0, (8.0, 8.0), 1)
    config.augment.scale_range = [0.5, 2.0]  # a random rescale before the crop: 4–16 µm per sample
    assert scale_of_run(config) == TrainingScale((0.5, 0.5), 8.0, (4.0, 16.0), 1)
    config.deform.enabled = False
    assert scale_of_run(config) is None

    classes = (LesionClass(1, "T", "tumour", (1.0, 0.5, 0.0, 1.0)),)
    model = deformed(build_model("hrnetv2_w18s", num_classes=2), config.deform, 100.0).eval()
    exported = export_model(tmp_path / "best.safetensors", model, model_metadata(config, classes, False, 1, None, scale))
    assert training_scale(read_checkpoint_metadata(exported)) == scale
    assert "training_scale" not in model_metadata(config, classes, False, 1, None)
    assert np.isfinite(scale.um_per_sample)
