"""The one inference core: fundus job, slide job and the trainer's validation give the same
probabilities for the same model and image; one pixels→RGB8 rule for files and layers; one NaN
policy; the out-of-memory fallback (smaller tiles, then the CPU) with its notices."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from napari_m2mrf.errors import UserError
from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing
from napari_m2mrf.inference.runner import ModelRunner
from napari_m2mrf.inference.slide import segment_deformed_image
from napari_m2mrf.io.photographs import read_image
from napari_m2mrf.io.pixels import rgb_channels, round_rgb8, to_rgb8, value_scale
from napari_m2mrf.models.outputs import class_probabilities, foreground_channels, labels, probabilities
from training.datasets import to_tensors
from training.evaluation import class_probabilities as evaluation_probabilities
from training.transforms import Sample

MEAN, STD = (116.513, 56.437, 16.309), (80.206, 41.232, 13.293)


def _net(outputs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, outputs, 1))


def _meta(output: str, outputs: int) -> dict:
    first = 0 if output == "softmax" else 1
    classes = [{"label": first + k, "code": f"C{k}", "name": f"class {k}", "color": [1, 0, 0, 1]} for k in range(outputs)]
    return {"output": output, "classes": classes, "normalization": {"mean": list(MEAN), "std": list(STD)}}


def _image(height: int = 72, width: int = 96) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _evaluation(model: nn.Module, image: np.ndarray, multilabel: bool) -> np.ndarray:
    """The trainer's validation path: its sample tensors, the model, its logits → probabilities."""
    tensor, _ = to_tensors(Sample(image, np.zeros((1, *image.shape[:2]), np.uint8)), MEAN, STD)
    with torch.no_grad():
        logits = model.eval()(tensor[None])
    return evaluation_probabilities(logits[0].float(), multilabel)


def test_fundus_slide_and_evaluation_paths_give_the_same_sigmoid_probabilities() -> None:
    model, image, meta = _net(4), _image(), _meta("sigmoid", 4)
    fundus = FundusPredictor(model, Preprocessing(MEAN, STD, (96, 72)), "cpu").predict_tiled(image, tile=128)
    slide = segment_deformed_image(ModelRunner(model, "cpu"), model, image.astype(np.float32), meta)
    evaluation = _evaluation(model, image, multilabel=True)
    np.testing.assert_allclose(slide, fundus, rtol=0, atol=1e-6)
    np.testing.assert_allclose(evaluation, fundus, rtol=0, atol=1e-6)
    # labels: the slide job's label values are the fundus job's channel numbers (labels 1..K)
    from napari_m2mrf.models.outputs import probabilities_to_labels

    np.testing.assert_array_equal(labels(slide, meta, [0.5] * 4), probabilities_to_labels(fundus, [0.5] * 4))


def test_slide_and_evaluation_paths_give_the_same_softmax_probabilities() -> None:
    model, image, meta = _net(3, seed=1), _image(), _meta("softmax", 3)
    slide = segment_deformed_image(ModelRunner(model, "cpu"), model, image.astype(np.float32), meta)
    evaluation = _evaluation(model, image, multilabel=False)
    np.testing.assert_allclose(slide[foreground_channels(meta)], evaluation, rtol=0, atol=1e-6)
    np.testing.assert_allclose(slide.sum(axis=0), 1.0, atol=1e-5)


def test_a_16_bit_image_gives_the_same_rgb8_from_a_file_and_from_a_layer(tmp_path) -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 65536, (40, 48, 3), dtype=np.uint16)
    pixels[0, :6, 0] = [0, 128, 129, 257, 32767, 65535]  # around rounding edges
    path = tmp_path / "sixteen.tif"
    tifffile.imwrite(path, pixels, photometric="rgb")
    from_file = read_image(path).data
    from_layer = to_rgb8(pixels)
    np.testing.assert_array_equal(from_file, from_layer)
    # the slide path: the same channel rule and scale, the same rounding of its deformed image
    np.testing.assert_array_equal(round_rgb8(rgb_channels(pixels.astype(np.float32)) * value_scale(pixels.dtype)), from_layer)
    # rounded to the nearest 8-bit value, not floored (x // 257 would give 0 for 128)
    assert list(from_layer[0, :6, 0]) == [0, 0, 1, 1, 127, 255]
    np.testing.assert_array_equal(from_layer, np.floor(pixels / 257.0 + 0.5).astype(np.uint8))


def test_grey_and_rgba_layers_become_rgb_and_bad_values_are_user_errors() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(to_rgb8(grey), np.repeat(grey[..., None], 3, axis=-1))
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_rgb8(rgba).shape == (3, 4, 3) and not to_rgb8(rgba).any()
    np.testing.assert_array_equal(to_rgb8(np.full((2, 2), 0.5)), np.full((2, 2, 3), 128, np.uint8))
    with pytest.raises(UserError, match="NaN"):
        to_rgb8(np.full((2, 2, 3), np.nan))
    with pytest.raises(UserError, match="unsupported pixel type int32"):
        to_rgb8(np.zeros((2, 2, 3), np.int32))


def test_nan_logits_give_probability_zero_everywhere() -> None:
    nan = float("nan")
    logits = torch.tensor([[[nan, 2.0, nan]], [[1.0, 0.0, nan]], [[0.0, -1.0, nan]]])  # 3 channels, 1×3 pixels
    sigmoid = probabilities(logits, "sigmoid")
    assert sigmoid[0, 0, 0] == 0 and (sigmoid[:, 0, 2] == 0).all() and torch.isfinite(sigmoid).all()
    softmax = probabilities(logits, "softmax")
    # pixel 0: the NaN channel 0 gets 0, the other two share the probability; pixel 2: all NaN → all 0
    assert softmax[0, 0, 0] == 0
    torch.testing.assert_close(softmax[1:, 0, 0], torch.softmax(torch.tensor([1.0, 0.0]), 0))
    assert (softmax[:, 0, 2] == 0).all() and torch.isfinite(softmax).all()
    # an all-NaN pixel is background in labels, in sigmoid and softmax models alike
    assert labels(softmax.numpy(), _meta("softmax", 3))[0, 2] == 0
    assert labels(sigmoid.numpy(), _meta("sigmoid", 3), [0.5] * 3)[0, 2] == 0
    # the trainer's validation follows the same policy
    np.testing.assert_array_equal(evaluation_probabilities(logits, multilabel=True), sigmoid.numpy())
    np.testing.assert_array_equal(evaluation_probabilities(logits, multilabel=False), softmax[1:].numpy())
    probs, classes = class_probabilities(logits, _meta("softmax", 3))
    assert [c["label"] for c in classes] == [1, 2] and np.isfinite(probs).all()


class _SimulatedAccelerator(nn.Module):
    """Test scaffolding: a real small conv net whose forward raises torch's out-of-memory error for
    inputs above ``max_pixels`` while it runs in reduced precision (autocast: the stand-in for a GPU
    on a machine that has none); in float32 (on the CPU) every size fits."""

    def __init__(self, max_pixels: int) -> None:
        super().__init__()
        self.net = _net(4)
        self.max_pixels = max_pixels
        self.sizes: list[tuple[int, int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on_accelerator = torch.is_autocast_enabled(x.device.type)
        self.sizes.append((*x.shape[-2:], on_accelerator))
        if on_accelerator and x.shape[-1] * x.shape[-2] > self.max_pixels:
            raise torch.OutOfMemoryError("out of memory (simulated for large tiles)")
        return self.net(x)


def test_out_of_memory_halves_the_tile_to_the_floor_then_runs_on_the_cpu(caplog) -> None:
    model = _SimulatedAccelerator(max_pixels=60 * 60)
    runner = ModelRunner(model, "cpu", precision=torch.bfloat16)
    image = torch.randn(1, 3, 200, 200)
    notices: list[str] = []
    with caplog.at_level(logging.WARNING, logger="napari_m2mrf.inference.runner"):
        result = runner.run_tiled(image, tile=256, overlap=32, min_tile=64, notify=notices.append)
    assert notices == [
        "out of GPU memory: retrying with 128×128 px tiles",
        "out of GPU memory: retrying with 64×64 px tiles",
        "out of GPU memory even with 64×64 px tiles: running on the CPU",
    ]
    assert [r.getMessage() for r in caplog.records] == notices
    assert runner.device.type == "cpu" and runner.autocast is None
    tried = [(h, w) for h, w, accelerated in model.sizes if accelerated]
    assert tried[0] == (200, 200) and (128, 128) in tried and (64, 64) in tried
    assert model.sizes[-1] == (200, 200, False)  # on the CPU: the first tile size again, the whole image
    with torch.no_grad():
        expected = torch.sigmoid(model.net(image))[0].numpy()
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)


def test_out_of_memory_on_the_cpu_at_the_floor_is_a_user_error() -> None:
    class AlwaysOutOfMemory(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.OutOfMemoryError("out of memory")

    notices: list[str] = []
    with pytest.raises(UserError, match="out of memory even with 64×64 px tiles on the CPU"):
        ModelRunner(AlwaysOutOfMemory(), "cpu").run_tiled(torch.zeros(1, 3, 100, 100), 128, 16, min_tile=64,
                                                          notify=notices.append)
    assert notices == ["out of GPU memory: retrying with 64×64 px tiles"]
