"""The network a run trains, and its forward pass to losses.

A registry model (``napari_m2mrf.models.build_model``) with one output per lesion (multi-label
losses) or background + classes (softmax losses), optionally started from a trained checkpoint
(fine-tuning) and optionally wrapped in a ``DeformedSegmenter`` (Jin et al.): the deformation
module picks where to sample the input, the segmentation network sees only the deformed
low-resolution image, and the loss compares its logits with the labels sampled at the same grid,
plus γ times the edge loss on the density map.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_m2mrf.classes import LesionClass
from napari_m2mrf.errors import UserError
from napari_m2mrf.models import build_model, load_checkpoint
from napari_m2mrf.models.checkpoints import build_deformed
from napari_m2mrf.models.deform import DeformedOutput, DeformedSegmenter
from training.config import DeformConfig, TrainingConfig
from training.losses import SegmentationLoss


def build_network(config: TrainingConfig, classes: tuple[LesionClass, ...], multilabel: bool) -> nn.Module:
    """The model to train (see the module docstring); ``UserError`` when ``init_checkpoint`` does
    not fit the configured architecture and number of outputs."""
    outputs = len(classes) if multilabel else len(classes) + 1
    model = build_model(config.model.name, **{**config.model.options, "num_classes": outputs})
    if config.model.init_checkpoint:
        trained, _ = load_checkpoint(config.model.init_checkpoint)
        try:
            model.load_state_dict(trained.state_dict())
        except RuntimeError as exc:
            raise UserError(
                f"{config.model.init_checkpoint}: does not fit model {config.model.name} with {outputs} outputs "
                f"({str(exc).splitlines()[0]})"
            ) from None
    if config.deform.enabled:
        return deformed(model, config.deform, config.loss.edge_weight)
    return model


def deformed(seg_net: nn.Module, config: DeformConfig, edge_weight: float) -> DeformedSegmenter:
    """``seg_net`` behind the configured deformation module and sampler: ``config`` as the checkpoint
    settings that ``napari_m2mrf.models.checkpoints.build_deformed`` (the one builder) reads."""
    settings = {
        "output_size": list(config.output_size),
        "density_size": list(config.density_size) if config.density_size else None,
        "sampler": config.sampler,
        "sigma": config.sigma,
        "deformation": config.deformation,
        "edge_weight": edge_weight,
    }
    return build_deformed(seg_net, settings)


def forward_losses(
    network: nn.Module,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: SegmentationLoss,
    edge_normalize: str = "none",
) -> dict[str, torch.Tensor]:
    """Run ``network`` (possibly DDP-wrapped ``model``) on ``images`` (N, 3, H, W) and return the
    loss terms against ``targets`` (N, K, H, W) masks or (N, 1, H, W) class indices; ``"loss"`` is
    the total to back-propagate, the other entries are detached terms."""
    output = network(images)
    if not isinstance(output, DeformedOutput):
        return loss_fn(output, targets)
    labels = targets[:, 0].long()
    losses = loss_fn(output.logits, model.sampled_labels(labels, output)[:, None])
    if model.edge_weight > 0:
        edge = model.edge_term(labels, output, edge_normalize)
        losses["edge"] = edge.detach()
        losses["loss"] = losses["loss"] + edge
    return losses
