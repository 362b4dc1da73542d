"""One timed optimiser step on a fixed batch, shared by the training stage and the fundus estimate."""

from __future__ import annotations

import time

import torch
from torch import nn

from .device import synchronize


class TimedTrainingStep:
    """Calling it runs one training step of ``model`` and returns its seconds.

    ``images`` is ``(N, 3, H, W)`` float32 and ``targets`` ``(N, C, H, W)`` uint8 in {0, 1}, both on
    ``device``; the forward (``training.networks.forward_losses``) runs under autocast ``dtype``
    (None: plain float32), and float16 steps through a ``GradScaler``. The step is timed between
    device synchronisations; ``loss`` is the last step's loss (0-dim tensor).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                 images: torch.Tensor, targets: torch.Tensor, device: str, dtype: torch.dtype | None) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.images, self.targets = images, targets
        self.device, self.dtype = device, dtype
        self.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        self.loss: torch.Tensor | None = None

    def __call__(self) -> float:
        from training.networks import forward_losses

        synchronize(self.device)
        began = time.perf_counter()
        with torch.autocast(self.device.split(":")[0], dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            loss = forward_losses(self.model, self.model, self.images, self.targets, self.loss_fn)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        synchronize(self.device)
        self.loss = loss.detach()
        return time.perf_counter() - began
