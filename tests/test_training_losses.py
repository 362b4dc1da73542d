"""Losses against hand-computed values, learning-rate schedules, and the iteration sampler."""

from __future__ import annotations

import math

import pytest
import torch

from training.config import LossConfig, OptimConfig
from training.losses import SegmentationLoss, binary_dice_loss, cross_entropy_loss, focal_loss
from training.sampling import IterationBatchSampler
from training.schedules import build_optimizer, learning_rate

SMOOTH = 1e-5
BIG = 100.0  # sigmoid(100) == 1 and sigmoid(-100) == 0 in float32


def test_dice_hand_computed_one_sample() -> None:
    # class 0: p = 0.5 everywhere, one positive of four pixels -> 1 - (2*0.5 + s) / (2 + 1 + s)
    # class 1: a perfect prediction -> 0
    logits = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]], [[BIG, -BIG], [-BIG, BIG]]]])
    target = torch.tensor([[[[1, 0], [0, 0]], [[1, 0], [0, 1]]]])
    expected = ((1 - (1.0 + SMOOTH) / (3.0 + SMOOTH)) + 0.0) / 2
    assert binary_dice_loss(logits, target, SMOOTH).item() == pytest.approx(expected, rel=1e-6)


def test_dice_averages_classes_then_batch_and_uses_smooth_for_empty_masks() -> None:
    # sample 0: everything predicted 0, nothing to find -> (0 + s) / (0 + s) = 1 -> loss 0 per class
    # sample 1: everything predicted 1 (4 px), 1 positive -> 1 - (2 + s) / (4 + 1 + s)
    logits = torch.stack([torch.full((3, 2, 2), -BIG), torch.full((3, 2, 2), BIG)])
    target = torch.zeros(2, 3, 2, 2)
    target[1, :, 0, 0] = 1
    per_class_1 = 1 - (2 + SMOOTH) / (5 + SMOOTH)
    expected = (0.0 + per_class_1) / 2
    assert binary_dice_loss(logits, target, SMOOTH).item() == pytest.approx(expected, rel=1e-6)


def test_dice_matches_the_formula_on_random_input_and_resizes_logits() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=generator)
    target = (torch.rand(2, 4, 16, 16, generator=generator) > 0.7).float()
    up = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    p = torch.sigmoid(up).double()
    g = target.double()
    total = 0.0
    for n in range(2):
        per_sample = 0.0
        for k in range(4):
            per_sample += 1 - (2 * (p[n, k] * g[n, k]).sum() + SMOOTH) / (p[n, k].sum() + g[n, k].sum() + SMOOTH)
        total += per_sample / 4
    assert binary_dice_loss(logits, target, SMOOTH).item() == pytest.approx(float(total) / 2, rel=1e-5)


def test_focal_loss_hand_computed_and_reduces_to_cross_entropy() -> None:
    # two classes, logits (0, ln 3): p(class 1) = 0.75
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(1, 2, 1, 1)
    truth = torch.ones(1, 1, 1, 1, dtype=torch.uint8)
    expected = -((1 - 0.75) ** 2) * math.log(0.75)
    assert focal_loss(logits, truth, gamma=2.0).item() == pytest.approx(expected, rel=1e-6)
    assert cross_entropy_loss(logits, truth).item() == pytest.approx(-math.log(0.75), rel=1e-6)
    random_logits = torch.randn(2, 3, 5, 5)
    labels = torch.randint(0, 3, (2, 1, 5, 5))
    assert focal_loss(random_logits, labels, gamma=0.0).item() == pytest.approx(
        cross_entropy_loss(random_logits, labels).item(), rel=1e-6
    )


def test_segmentation_loss_reports_total_and_term() -> None:
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    losses = SegmentationLoss(LossConfig(name="dice"))(logits, torch.ones(1, 2, 4, 4))
    assert set(losses) == {"loss", "dice"}
    assert losses["loss"].requires_grad and not losses["dice"].requires_grad
    assert losses["loss"].item() == pytest.approx(1 - (2 * 8 + SMOOTH) / (8 + 16 + SMOOTH), rel=1e-6)


def test_dice_bce_is_dice_plus_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 8, 8), (torch.rand(2, 3, 8, 8) < 0.3).float()
    dice = binary_dice_loss(logits, target, SMOOTH).item()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target).item()
    losses = SegmentationLoss(LossConfig(name="dice_bce", bce_weight=0.25))(logits, target)
    assert set(losses) == {"loss", "dice", "bce"}
    assert losses["dice"].item() == pytest.approx(dice, rel=1e-6) and losses["bce"].item() == pytest.approx(bce, rel=1e-6)
    assert losses["loss"].item() == pytest.approx(dice + 0.25 * bce, rel=1e-6)


def test_poly_schedule_values() -> None:
    config = OptimConfig(lr=0.01, min_lr=1e-4, power=0.9, schedule="poly")
    assert learning_rate(0, 40000, config) == pytest.approx(0.01)
    assert learning_rate(20000, 40000, config) == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)
    assert learning_rate(30000, 40000, config) == pytest.approx((0.01 - 1e-4) * 0.25**0.9 + 1e-4)
    assert learning_rate(40000, 40000, config) == pytest.approx(1e-4)
    values = [learning_rate(i, 100, config) for i in range(101)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_step_and_constant_schedules() -> None:
    step = OptimConfig(name="adam", lr=1e-3, schedule="step", step_every=100, step_gamma=0.1)
    assert [learning_rate(i, 1000, step) for i in (0, 99, 100, 250)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])
    assert learning_rate(77, 100, OptimConfig(lr=0.5, schedule="constant")) == 0.5


def test_optimisers_follow_the_recipes() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(params, OptimConfig())
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 5e-4 and sgd.defaults["lr"] == 0.01
    adam = build_optimizer(params, OptimConfig(name="adam", lr=1e-3, weight_decay=0.0))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.9, 0.999)


def test_sampler_resumes_and_splits_the_global_batch() -> None:
    whole = IterationBatchSampler(7, 4, seed=3, start=0, stop=10)
    batches = list(whole)
    assert len(batches) == 10
    # resuming at iteration 6 replays exactly the same keys
    assert list(IterationBatchSampler(7, 4, seed=3, start=6, stop=10)) == batches[6:]
    # two processes together see the global batch, in slot order
    rank0 = list(IterationBatchSampler(7, 4, seed=3, start=0, stop=10, rank=0, world_size=2))
    rank1 = list(IterationBatchSampler(7, 4, seed=3, start=0, stop=10, rank=1, world_size=2))
    assert [a + b for a, b in zip(rank0, rank1)] == batches
    # every record appears once per epoch of 7 positions
    positions = [key.index for batch in batches for key in batch]
    assert sorted(positions[:7]) == list(range(7)) and sorted(positions[7:14]) == list(range(7))
    # augmentation seeds differ per slot and iteration
    assert len({key.entropy for batch in batches for key in batch}) == 40


def test_sampler_rejects_a_batch_that_does_not_split() -> None:
    from napari_m2mrf.errors import UserError

    with pytest.raises(UserError, match="divisible"):
        IterationBatchSampler(7, 3, seed=0, start=0, stop=1, rank=0, world_size=2)
