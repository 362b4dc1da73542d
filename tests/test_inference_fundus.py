"""Fundus inference: whole-image protocol, tiled sliding window with blending, progress, cancel, OOM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_m2mrf.errors import UserError
from napari_m2mrf.inference.devices import choose_device, describe_device
from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing
from napari_m2mrf.inference.runner import tile_starts
from napari_m2mrf.models.outputs import probabilities_to_labels
from napari_m2mrf.models.preprocess import keep_ratio_size, to_normalised_tensor
from napari_m2mrf.jobs import CancelToken, Cancelled

PREP = Preprocessing(mean=(116.513, 56.437, 16.309), std=(80.206, 41.232, 13.293), input_scale=(96, 64))


def _conv_net(kernel: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, kernel, padding=kernel // 2), nn.ReLU(), nn.Conv2d(8, 4, 1))


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_official_keep_ratio_size_of_idrid() -> None:
    assert keep_ratio_size(2848, 4288, (1440, 960)) == (956, 1440)
    assert keep_ratio_size(1024, 1024, (1024, 1024)) == (1024, 1024)


def test_tile_starts_cover_the_length_with_overlap() -> None:
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(1000, 256, 64)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(starts, starts[1:]))


def test_one_tile_covering_the_image_equals_whole_image_inference() -> None:
    model = _conv_net(3)
    image = _image(90, 130)
    predictor = FundusPredictor(model, PREP, device="cpu")
    tiled = predictor.predict_tiled(image, tile=256, overlap=32)
    with torch.inference_mode():
        direct = torch.sigmoid(model(to_normalised_tensor(image, PREP.mean, PREP.std)))[0].numpy()
    np.testing.assert_allclose(tiled, direct, rtol=0, atol=1e-6)


def test_overlapping_tiles_blend_to_the_whole_image_result_for_a_pointwise_model() -> None:
    model = _conv_net(1)
    image = _image(300, 410)
    predictor = FundusPredictor(model, PREP, device="cpu")
    tiled = predictor.predict_tiled(image, tile=128, overlap=40)
    with torch.inference_mode():
        direct = torch.sigmoid(model(to_normalised_tensor(image, PREP.mean, PREP.std)))[0].numpy()
    np.testing.assert_allclose(tiled, direct, rtol=0, atol=1e-5)


def test_whole_image_protocol_returns_probabilities_at_the_original_size() -> None:
    predictor = FundusPredictor(_conv_net(3), PREP, device="cpu")
    probs = predictor.predict_whole(_image(200, 300))
    assert probs.shape == (4, 200, 300) and probs.dtype == np.float32
    assert 0.0 <= probs.min() and probs.max() <= 1.0


def test_flips_average_the_four_mirrored_views_mapped_back() -> None:
    predictor = FundusPredictor(_conv_net(3), PREP, device="cpu")
    image = _image(PREP.input_scale[1], PREP.input_scale[0])  # at the input size: no resampling
    views = [predictor.predict_whole(np.ascontiguousarray(image[::rows, ::cols]))[:, ::rows, ::cols]
             for rows, cols in ((1, 1), (1, -1), (-1, 1), (-1, -1))]
    np.testing.assert_allclose(predictor.predict_whole(image, flips=True), np.mean(views, axis=0), atol=1e-6)
    symmetric = FundusPredictor(_conv_net(1), PREP, device="cpu")  # a pointwise model is mirror-invariant
    np.testing.assert_allclose(symmetric.predict_whole(image, flips=True), symmetric.predict_whole(image), atol=1e-6)


def test_test_time_scales_average_the_predictions_at_each_input_size_mapped_back() -> None:
    image = _image(130, 190)
    model = _conv_net(3)
    predictor = FundusPredictor(model, PREP, device="cpu")
    at_double = FundusPredictor(model, Preprocessing(PREP.mean, PREP.std, (192, 128)), device="cpu")
    np.testing.assert_allclose(predictor.predict_whole(image, scales=(2.0,)), at_double.predict_whole(image), atol=1e-6)
    both = predictor.predict_whole(image, scales=(1.0, 2.0), flips=True)
    expected = (predictor.predict_whole(image, flips=True) + at_double.predict_whole(image, flips=True)) / 2
    np.testing.assert_allclose(both, expected, atol=1e-6)
    assert not np.allclose(predictor.predict_whole(image), at_double.predict_whole(image), atol=1e-3)  # the scale matters


def test_class_scales_give_each_channel_the_mean_of_its_own_scales() -> None:
    image = _image(130, 190)
    predictor = FundusPredictor(_conv_net(3), PREP, device="cpu")
    single = {scale: predictor.predict_whole(image, scales=(scale,)) for scale in (0.75, 1.0, 1.5)}
    chosen = [(1.0, 1.5), (0.75, 1.0), (0.75,), (1.5,)]
    mixed = predictor.predict_whole(image, class_scales=chosen)
    for k, scales in enumerate(chosen):
        np.testing.assert_allclose(mixed[k], np.mean([single[scale][k] for scale in scales], axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="names 3 channels; the model has 4"):
        predictor.predict_whole(image, class_scales=chosen[:3])


def test_progress_over_test_time_scales_is_monotonic_and_weighted_by_input_area() -> None:
    predictor = FundusPredictor(_conv_net(3), PREP, device="cpu")
    seen: list[tuple[int, int]] = []
    predictor.predict_whole(_image(130, 190), class_scales=[(1.0,), (1.0, 1.5), (1.5,), (1.0,)],
                            progress=lambda done, total, message: seen.append((done, total)))
    fractions = [done / total for done, total in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len({total for _, total in seen}) == 1
    first_pass_end = max(f for f in fractions if f <= 100 / 325 + 1e-9)  # scale 1.0: 100 of 100 + 225 area units
    assert first_pass_end == pytest.approx(100 / 325)


def test_progress_reports_every_tile_and_cancel_stops_at_the_next_one() -> None:
    predictor = FundusPredictor(_conv_net(3), PREP, device="cpu")
    seen: list[tuple[int, int]] = []
    cancel = CancelToken()

    def progress(done: int, total: int, message: str) -> None:
        seen.append((done, total))
        if done == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        predictor.predict_tiled(_image(300, 300), tile=128, overlap=16, progress=progress, cancel=cancel)
    assert seen == [(1, 9), (2, 9)]


class _RunsOutOfMemoryAboveArea(nn.Module):
    """A real conv net that raises torch's out-of-memory error for inputs larger than ``max_area`` pixels,
    as a GPU does when a tile does not fit."""

    def __init__(self, max_area: int) -> None:
        super().__init__()
        self.net = _conv_net(3)
        self.max_area = max_area

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] * x.shape[-2] > self.max_area:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by tile size)")
        return self.net(x)


def test_out_of_memory_retries_with_smaller_tiles_and_says_so() -> None:
    predictor = FundusPredictor(_RunsOutOfMemoryAboveArea(max_area=200 * 200), PREP, device="cpu")
    notices: list[str] = []
    probs = predictor.predict_tiled(_image(400, 400), tile=512, overlap=64, notify=notices.append)
    assert probs.shape == (4, 400, 400)
    assert notices == ["out of GPU memory: retrying with 256×256 px tiles", "out of GPU memory: retrying with 128×128 px tiles"]


def test_labels_take_the_most_probable_class_above_its_threshold() -> None:
    probs = np.zeros((4, 2, 3), np.float32)
    probs[0, 0, 0] = 0.6  # EX above 0.5
    probs[1, 0, 1], probs[3, 0, 1] = 0.7, 0.9  # HE and MA: MA wins
    probs[2, 1, 0] = 0.4  # SE below its 0.5 threshold
    probs[3, 1, 1] = 0.35  # MA above its own 0.3 threshold
    labels = probabilities_to_labels(probs, [0.5, 0.5, 0.5, 0.3])
    np.testing.assert_array_equal(labels, [[1, 4, 0], [0, 4, 0]])


def test_unknown_or_missing_device_is_a_user_error() -> None:
    assert choose_device("cpu").type == "cpu"
    assert describe_device("cpu") == f"cpu ({torch.get_num_threads()} threads, float32)"
    if not torch.cuda.is_available():
        assert describe_device("auto") == describe_device("cpu")
    with pytest.raises(UserError, match="unknown device"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="not available"):
            choose_device("cuda")


def test_cancel_interrupts_a_forward_pass_between_layers() -> None:
    cancel = CancelToken()
    calls: list[str] = []

    class CancelsHalfway(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Conv2d(3, 4, 1)
            self.second = nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.first(x)
            calls.append("first")
            cancel.set()  # as if Cancel were clicked now
            x = self.second(x)
            calls.append("second")
            return x

    predictor = FundusPredictor(CancelsHalfway(), PREP, device="cpu")
    with pytest.raises(Cancelled):
        predictor.predict_whole(_image(64, 64), cancel=cancel)
    assert calls == ["first"]
    assert not any(m._forward_pre_hooks for m in predictor.model.modules()), "hooks are removed afterwards"
