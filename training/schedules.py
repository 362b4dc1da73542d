"""Optimisers and learning-rate schedules.

The learning rate is a pure function of the iteration (:func:`learning_rate`), set on every
parameter group before each step, so a resumed run needs no scheduler state. Recipes:
M2MRF (paper §4.1, official schedule): SGD, momentum 0.9, weight decay 5e-4, lr 0.01, poly power
0.9 with min_lr 1e-4 over 40k (IDRiD) / 60k (DDR) iterations. Jin et al. (paper A.7): Adam,
lr 1e-3, β1 0.9, step decay.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from training.config import OptimConfig


def learning_rate(iteration: int, total_iterations: int, config: OptimConfig) -> float:
    """Learning rate for the step that follows ``iteration`` completed iterations (0-based).

    poly: ``(lr - min_lr) · (1 - iteration / total) ** power + min_lr``;
    step: ``lr · step_gamma ** (iteration // step_every)``; constant: ``lr``.
    """
    if config.schedule == "poly":
        remaining = 1.0 - min(iteration, total_iterations) / total_iterations
        return (config.lr - config.min_lr) * remaining**config.power + config.min_lr
    if config.schedule == "step":
        return config.lr * config.step_gamma ** (iteration // config.step_every)
    return config.lr


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam (betas, weight decay) over ``parameters``."""
    trainable = [p for p in parameters if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(trainable, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set ``value`` on every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = value
