"""BatchNorm whose batch statistics span all processes, on any device (gloo on CPU included).

``torch.nn.SyncBatchNorm`` only runs on GPUs. :class:`ProcessSyncBatchNorm2d` computes the global
mean and (biased) variance of the channels over every process's batch from each process's own
mean and variance, combined in float64 by one differentiable all-reduce per layer (one more in
backward), so forward and backward equal plain BatchNorm on the concatenated global batch; running statistics are updated with the global
values (unbiased variance) exactly as ``nn.BatchNorm2d`` would. Outside a multi-process run, or in
eval mode, it is ``nn.BatchNorm2d``. Its state-dict keys are those of ``nn.BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _SumOverProcesses(torch.autograd.Function):
    """``all_reduce(SUM)`` whose gradient is the sum of every process's gradient (the backward of
    a sum that each process uses)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``tensor`` over all processes of the default group."""
    return _SumOverProcesses.apply(tensor)


class ProcessSyncBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with statistics over the batches of all processes of the default group."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """input (N, C, H, W) → same shape."""
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        channels, pixels_here = input.shape[1], input.numel() / input.shape[1]
        local_variance, local_mean = torch.var_mean(input, dim=(0, 2, 3), unbiased=False)
        mean64 = local_mean.double()
        count = torch.full((1,), pixels_here, dtype=torch.float64, device=input.device)
        # One collective: Σ n·mean, Σ n·(variance + mean²), Σ n in float64 (no cancellation).
        totals = sum_over_processes(
            torch.cat([mean64 * pixels_here, (local_variance.double() + mean64.square()) * pixels_here, count])
        )
        pixels = totals[-1]
        mean = totals[:channels] / pixels
        variance = (totals[channels : 2 * channels] / pixels - mean.square()).clamp_min(0)
        mean, variance = mean.to(input.dtype), variance.to(input.dtype)
        centred = input - mean[None, :, None, None]
        output = centred * torch.rsqrt(variance + self.eps)[None, :, None, None]
        if self.affine:
            output = output * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), variance.detach() * float(pixels) / float(pixels - 1))
        return output

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_variance: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_variance.to(self.running_var.dtype), factor)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by :class:`ProcessSyncBatchNorm2d` with the
    same parameters and buffers (in place for children; returns the converted module)."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, ProcessSyncBatchNorm2d):
        state = module.state_dict()
        synced = ProcessSyncBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        synced.load_state_dict(state)
        if state:
            synced.to(next(iter(state.values())).device)
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child))
    return module
