"""Learned deformed downsampling (Jin et al., "Learning to Downsample", ICLR 2022), pure torch.

The parts of the paper's Fig. 2, each usable on its own:

* :class:`DeformationModule` ``D_θ``: low-resolution view ``N×3×h_d×w_d`` → sampling density
  ``N×1×h_d×w_d`` (softmax over all positions, so every map sums to 1). Variants ``"paper"``
  (A.7: conv3×3-BN-ReLU ×3 with {24, 24, 3} kernels, 1×1 conv, softmax, He init) and
  ``"official"`` (the released code: widths 192/192/24, ReLU6; 379,273 parameters).
* :class:`DeformedSampler` ``G_d`` (eq. 3): density → sampling grid, computed as a fixed Gaussian
  convolution of density × coordinates over the convolution of the density; :class:`UniformSampler`
  is the uniform baseline with the same call signature.
* :func:`sample_image` (bilinear) and :func:`sample_labels` (nearest; the official
  bilinear-then-truncate as an option) read an image or a label map at a grid; :func:`grid_to_pixels` / :func:`pixels_to_grid` convert between conventions.
* :func:`edge_target` and :func:`edge_loss` (eq. 4 and its footnote).
* :class:`DeformedSegmenter` wraps any segmentation network (``N×3×h×w`` → ``N×K×h×w`` logits).
* :func:`dynamic_output_size`: the paper's output-size rule for elongated images (A.6).

Conventions, used everywhere in this project:

* **Normalised coordinates** are those of ``torch.nn.functional.grid_sample`` with
  ``align_corners=False``: −1 is the outer edge of the first pixel, +1 the outer edge of the last
  one, so pixel ``k`` of a length-``L`` axis has its centre at ``(2k + 1)/L − 1``. Grids are
  ``N×h×w×2`` with ``(x, y)`` in the last axis, as ``grid_sample`` expects. Every ``grid_sample``
  and ``interpolate`` call in this module uses ``align_corners=False``.
* **Pixel coordinates** are ``(y, x)`` in level-0 pixels with pixel ``k``'s centre at ``k``; an
  ``H×W`` image covers ``[−0.5, H − 0.5] × [−0.5, W − 0.5]``, and ``p = ((g + 1)·L − 1)/2``.
* **Kernel widths** are standard deviations σ in density-map pixels. The official code's
  Gaussian "radius" is a full width at half maximum: convert it with :func:`sigma_from_fwhm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Size = tuple[int, int]

EDGE_KERNEL = ((-1.0, -1.0, -1.0), (-1.0, 8.0, -1.0), (-1.0, -1.0, -1.0))
"""The 8-neighbour edge filter of the paper's footnote 4."""

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def sigma_from_fwhm(fwhm: float) -> float:
    """Standard deviation σ of a Gaussian whose full width at half maximum is ``fwhm`` (same unit)."""
    return fwhm / FWHM_PER_SIGMA


# --------------------------------------------------------------------------- deformation module


@dataclass(frozen=True)
class DeformationConfig:
    """Widths and activations of the three conv3×3-BN-activation layers before the 1×1 conv."""

    widths: tuple[int, int, int]
    activations: tuple[str, str, str]
    bn_bias_init: float


DEFORMATION_VARIANTS: dict[str, DeformationConfig] = {
    # Paper A.7: {24, 24, 3} kernels, BN + ReLU after each, He initialisation.
    "paper": DeformationConfig((24, 24, 3), ("relu", "relu", "relu"), bn_bias_init=0.0),
    # Official code: 192/192/24 with ReLU6, the last BN followed by the compress net's ReLU;
    # BN weight 1, bias 1e-4.
    "official": DeformationConfig((192, 192, 24), ("relu6", "relu6", "relu"), bn_bias_init=1e-4),
}

_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class DeformationModule(nn.Module):
    """``D_θ``: ``N×C×h_d×w_d`` low-resolution image → ``N×1×h_d×w_d`` sampling density.

    Three conv3×3 (no bias) + BatchNorm + activation layers, a 1×1 conv (with bias) to one
    channel, then a softmax over all ``h_d·w_d`` positions of each image: the density is positive
    and sums to 1 per image. Convolutions get He (Kaiming normal, fan-in) initialisation.
    """

    def __init__(self, variant: str = "paper", in_channels: int = 3) -> None:
        super().__init__()
        if variant not in DEFORMATION_VARIANTS:
            raise ValueError(f"unknown deformation variant {variant!r}; valid: {', '.join(DEFORMATION_VARIANTS)}")
        self.variant = variant
        config = DEFORMATION_VARIANTS[variant]
        layers: list[nn.Module] = []
        channels = in_channels
        for width, activation in zip(config.widths, config.activations):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                _ACTIVATIONS[activation](inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.compress = nn.Conv2d(channels, 1, 1)
        self.reset_parameters(config.bn_bias_init)

    def reset_parameters(self, bn_bias_init: float = 0.0) -> None:
        """He-normal convolutions (zero conv bias), BatchNorm weight 1 and bias ``bn_bias_init``."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.constant_(module.bias, bn_bias_init)

    def forward(self, image_lr: torch.Tensor) -> torch.Tensor:
        logits = self.compress(self.features(image_lr))
        n, _, h, w = logits.shape
        return torch.softmax(logits.reshape(n, h * w), dim=1).reshape(n, 1, h, w)


# --------------------------------------------------------------------------- coordinates


def _axis_centres(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Relative centres ``(k + 0.5)/length`` in ``[0, 1]`` of the ``length`` pixels of an axis."""
    return (torch.arange(length, device=device, dtype=dtype) + 0.5) / length


def _centre_map(size: Size, device: torch.device | None, dtype: torch.dtype) -> torch.Tensor:
    """``2×h×w`` relative ``(y, x)`` pixel centres of an ``h×w`` map."""
    h, w = size
    return torch.stack(torch.meshgrid(_axis_centres(h, device, dtype), _axis_centres(w, device, dtype), indexing="ij"))


def uniform_grid(
    batch: int, output_size: Size, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``batch×h×w×2`` normalised ``(x, y)`` grid of the pixel centres of a uniform ``h×w`` downsampling."""
    h, w = output_size
    ys = _axis_centres(h, device, dtype) * 2 - 1
    xs = _axis_centres(w, device, dtype) * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    return grid.unsqueeze(0).expand(batch, h, w, 2)


def grid_to_pixels(grid: torch.Tensor, image_size: Size) -> torch.Tensor:
    """Normalised ``(x, y)`` grid ``…×2`` → ``(y, x)`` pixel coordinates ``…×2`` of an ``H×W`` image."""
    height, width = image_size
    x = ((grid[..., 0] + 1) * width - 1) / 2
    y = ((grid[..., 1] + 1) * height - 1) / 2
    return torch.stack((y, x), dim=-1)


def pixels_to_grid(points: torch.Tensor, image_size: Size) -> torch.Tensor:
    """``(y, x)`` pixel coordinates ``…×2`` of an ``H×W`` image → normalised ``(x, y)`` grid ``…×2``."""
    height, width = image_size
    y = (2 * points[..., 0] + 1) / height - 1
    x = (2 * points[..., 1] + 1) / width - 1
    return torch.stack((x, y), dim=-1)


def sample_image(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples ``N×C×h×w`` of ``image`` ``N×C×H×W`` at ``grid`` ``N×h×w×2``.

    Positions outside the pixel centres (up to the image border) read the border pixels
    (``padding_mode="border"``).
    """
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=False)


LabelSampling = Literal["nearest", "bilinear_truncate"]


def sample_labels(labels: torch.Tensor, grid: torch.Tensor, mode: LabelSampling = "nearest") -> torch.Tensor:
    """Samples ``N×h×w`` (int64) of the class map ``labels`` ``N×H×W`` at ``grid`` ``N×h×w×2``.

    ``mode="nearest"`` (the paper): the class of the nearest pixel. ``mode="bilinear_truncate"``
    (the official training code): class ids interpolated bilinearly, then truncated toward zero,
    so a sample between classes 0 and 3 can get class 1 or 2 (border padding as everywhere here;
    the official code pads with zeros).
    """
    if labels.dtype.is_floating_point:
        raise TypeError("labels must be an integer class map")
    if mode not in ("nearest", "bilinear_truncate"):
        raise ValueError(f"label sampling must be 'nearest' or 'bilinear_truncate' (got {mode!r})")
    sampled = F.grid_sample(
        labels.unsqueeze(1).to(torch.float64), grid.to(torch.float64),
        mode="nearest" if mode == "nearest" else "bilinear", padding_mode="border", align_corners=False,
    ).squeeze(1)
    return (sampled.round() if mode == "nearest" else sampled.trunc()).to(torch.int64)


# --------------------------------------------------------------------------- samplers


def gaussian_kernel_1d(
    sigma: float, radius: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Gaussian weights ``exp(−d²/(2σ²))`` for ``d = −radius … radius`` (``2·radius + 1`` values, sum 1)."""
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _separable_valid_conv(stack: torch.Tensor, kernel_y: torch.Tensor, kernel_x: torch.Tensor) -> torch.Tensor:
    """Valid (unpadded) convolution of every channel of ``stack`` ``N×C×H×W`` with ``kernel_y ⊗ kernel_x``."""
    channels = stack.shape[1]
    kx = kernel_x.reshape(1, 1, 1, -1).expand(channels, 1, 1, -1)
    ky = kernel_y.reshape(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(stack, kx, groups=channels), ky, groups=channels)


class DeformedSampler(nn.Module):
    """``G_d`` of eq. 3: density ``N×1×h_d×w_d`` → sampling grid ``N×h×w×2`` (normalised ``(x, y)``).

    For each density pixel ``(i, j)`` the sampling location is the average of the coordinates
    of the pixels around it weighted by density × a fixed Gaussian ``k_σ``; both sums are
    separable convolutions, so gradients flow to the density. Coordinates are relative (pixel
    centres at ``(k + 0.5)/h_d``) and continue linearly into a replicate-padded border, so a
    density that piles up at the border can pull samples all the way to the image border; the
    result is clamped to the image (normalised ``[−1, 1]``). A uniform density gives exactly the
    uniform grid. The grid is resized to the output size as a displacement from the uniform grid
    (bilinear), which keeps a uniform density uniform at any output size.

    Args:
        sigma: standard deviation σ of the Gaussian in density-map pixels (a σ, not a FWHM).
        truncate: kernel half-width in units of σ: the paper's kernel is ``2σ + 1`` wide
            (``truncate=1``); the official code's is ``2·FWHM + 1`` (``truncate=FWHM_PER_SIGMA``,
            see :meth:`official`).
        aspect_ratio: σ along the long axis of an elongated density map is ``aspect_ratio·σ``
            (the kernel then covers the same fraction of both axes when the ratio equals the map's
            aspect ratio). ``1.0`` (the paper's square kernel) or a number, or ``"grid"``: the
            integer ratio long // short of the density map, as the official code.
    """

    def __init__(self, sigma: float, truncate: float = 1.0, aspect_ratio: float | Literal["grid"] = 1.0) -> None:
        super().__init__()
        if not sigma > 0 or not truncate > 0:
            raise ValueError(f"sigma and truncate must be positive (got {sigma}, {truncate})")
        if aspect_ratio != "grid" and not float(aspect_ratio) >= 1.0:
            raise ValueError(f"aspect_ratio must be >= 1 or 'grid' (got {aspect_ratio!r})")
        self.sigma = float(sigma)
        self.truncate = float(truncate)
        self.aspect_ratio = aspect_ratio

    @classmethod
    def official(cls, radius: float, aspect_ratio: float | Literal["grid"] = "grid") -> DeformedSampler:
        """The official code's kernel: its ``radius`` is the FWHM and the kernel half-width."""
        return cls(sigma_from_fwhm(radius), truncate=FWHM_PER_SIGMA, aspect_ratio=aspect_ratio)

    def kernel_sigmas(self, density_size: Size) -> tuple[float, float]:
        """``(σ_y, σ_x)`` in density pixels for a ``h_d×w_d`` density map."""
        h, w = density_size
        long_side, short_side = max(h, w), min(h, w)
        ratio = max(1, long_side // short_side) if self.aspect_ratio == "grid" else float(self.aspect_ratio)
        if h >= w:
            return self.sigma * ratio, self.sigma
        return self.sigma, self.sigma * ratio

    def kernel_radii(self, density_size: Size) -> tuple[int, int]:
        """Kernel half-widths ``(r_y, r_x)`` in density pixels (kernel size ``2r + 1``)."""
        return tuple(max(1, round(self.truncate * s)) for s in self.kernel_sigmas(density_size))

    def forward(self, density: torch.Tensor, output_size: Size) -> torch.Tensor:
        _, _, h, w = density.shape
        sigma_y, sigma_x = self.kernel_sigmas((h, w))
        r_y, r_x = self.kernel_radii((h, w))
        dtype, device = density.dtype, density.device
        padded = F.pad(density, (r_x, r_x, r_y, r_y), mode="replicate")
        ys = (torch.arange(-r_y, h + r_y, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(-r_x, w + r_x, device=device, dtype=dtype) + 0.5) / w
        stack = torch.cat((padded * ys[:, None], padded * xs[None, :], padded), dim=1)
        sums = _separable_valid_conv(
            stack,
            gaussian_kernel_1d(sigma_y, r_y, device, dtype),
            gaussian_kernel_1d(sigma_x, r_x, device, dtype),
        )
        denominator = sums[:, 2:3].clamp_min(torch.finfo(dtype).tiny)
        relative = sums[:, :2] / denominator  # N×2×h×w, (y, x) in [0, 1] up to the border overshoot
        displacement = relative - _centre_map((h, w), device, dtype)
        if (h, w) != tuple(output_size):
            displacement = F.interpolate(displacement, size=output_size, mode="bilinear", align_corners=False)
        relative = (_centre_map(output_size, device, dtype) + displacement).clamp(0.0, 1.0)
        return (relative * 2 - 1).flip(1).permute(0, 2, 3, 1)


class UniformSampler(nn.Module):
    """The uniform baseline with :class:`DeformedSampler`'s call: ``(density, output_size)`` → grid.

    The density only supplies batch size, device and dtype; the grid holds the pixel centres of a
    uniform ``h×w`` downsampling (normalised ``(x, y)``, ``N×h×w×2``).
    """

    def forward(self, density: torch.Tensor, output_size: Size) -> torch.Tensor:
        return uniform_grid(density.shape[0], output_size, density.device, density.dtype)


# --------------------------------------------------------------------------- edge loss


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur (σ in pixels, kernel half-width ``ceil(3σ)``) of ``N×C×H×W``, border values replicated."""
    radius = max(1, math.ceil(3 * sigma))
    kernel = gaussian_kernel_1d(sigma, radius, image.device, image.dtype)
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    return _separable_valid_conv(padded, kernel, kernel)


def edge_target(labels_lr: torch.Tensor, blur_sigma: float = 1.0) -> torch.Tensor:
    """Target density ``d_t`` ``N×1×h_d×w_d`` from a uniformly downsampled class map ``N×h_d×w_d``.

    Paper footnote 4: each map is scaled to ``[0, 1]`` (class id − min over max − min; a constant
    map gives 0), blurred by a Gaussian of σ = ``blur_sigma`` pixels, its border values are padded
    and the 8-neighbour edge kernel :data:`EDGE_KERNEL` is applied. Negative responses are set to
    0 (as the official code's 8-bit image arithmetic does), since a density cannot be negative.
    """
    y = labels_lr.to(torch.float32).unsqueeze(1)
    low = y.amin(dim=(2, 3), keepdim=True)
    span = y.amax(dim=(2, 3), keepdim=True) - low
    y = torch.where(span > 0, (y - low) / span.clamp_min(1e-12), torch.zeros_like(y))
    blurred = gaussian_blur(y, blur_sigma)
    kernel = torch.tensor(EDGE_KERNEL, dtype=y.dtype, device=y.device).reshape(1, 1, 3, 3)
    return F.conv2d(F.pad(blurred, (1, 1, 1, 1), mode="replicate"), kernel).clamp_min(0.0)


def _minmax(t: torch.Tensor) -> torch.Tensor:
    low = t.amin(dim=(1, 2, 3), keepdim=True)
    span = t.amax(dim=(1, 2, 3), keepdim=True) - low
    return (t - low) / span.clamp_min(1e-12)


def edge_loss(
    density: torch.Tensor, target: torch.Tensor, normalize: Literal["none", "minmax"] = "none"
) -> torch.Tensor:
    """``L_e`` = MSE between the density ``N×1×h_d×w_d`` and the target ``d_t`` of the same shape.

    ``normalize="none"`` is the paper's plain MSE; ``"minmax"`` first maps each image's density
    and target to ``[0, 1]`` (the official code does so over the whole batch).
    """
    if normalize == "minmax":
        density, target = _minmax(density), _minmax(target)
    elif normalize != "none":
        raise ValueError(f"normalize must be 'none' or 'minmax' (got {normalize!r})")
    return F.mse_loss(density, target)


# --------------------------------------------------------------------------- segmenter


@dataclass
class DeformedOutput:
    """What :class:`DeformedSegmenter` returns for a batch of ``N`` images.

    * ``logits``: ``N×K×h×w`` low-resolution logits;
    * ``grid``: ``N×h×w×2`` normalised ``(x, y)`` sampling grid (:func:`grid_to_pixels` gives level-0 pixels);
    * ``density``: ``N×1×h_d×w_d`` sampling density (sums to 1 per image);
    * ``deformed_image``: ``N×C×h×w`` image sampled at the grid (the segmentation network's input).
    """

    logits: torch.Tensor
    grid: torch.Tensor
    density: torch.Tensor
    deformed_image: torch.Tensor

    def points(self, image_size: Size) -> torch.Tensor:
        """Sampling locations ``N×h×w×2`` as ``(y, x)`` level-0 pixels of an ``H×W`` image."""
        return grid_to_pixels(self.grid, image_size)


def low_resolution_view(image: torch.Tensor, size: Size) -> torch.Tensor:
    """``N×C×H×W`` → ``N×C×h×w`` by antialiased bilinear resizing (the deformation module's input)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


class DeformedSegmenter(nn.Module):
    """Deformation module → sampler → any segmentation network, returning a :class:`DeformedOutput`.

    Args:
        seg_net: any module mapping ``N×3×h×w`` to ``N×K×h×w`` logits (a registered model).
        output_size: ``(h, w)`` of the deformed image and of the logits.
        density_size: ``(h_d, w_d)`` of the density map; the paper uses the output size or twice
            it (default: the output size).
        sampler: :class:`DeformedSampler` (default σ = 10 density pixels) or :class:`UniformSampler`.
        deformation: the deformation module (default: the paper's variant).
        edge_weight: γ of eq. 4 (the paper scales the edge loss by 100).
        label_sampling: how training targets are sampled (:func:`sample_labels`): ``"nearest"``
            (the paper) or ``"bilinear_truncate"`` (the official training code).
    """

    def __init__(
        self,
        seg_net: nn.Module,
        output_size: Size,
        density_size: Size | None = None,
        sampler: nn.Module | None = None,
        deformation: nn.Module | None = None,
        edge_weight: float = 100.0,
        label_sampling: LabelSampling = "nearest",
    ) -> None:
        super().__init__()
        if label_sampling not in ("nearest", "bilinear_truncate"):
            raise ValueError(f"label sampling must be 'nearest' or 'bilinear_truncate' (got {label_sampling!r})")
        self.label_sampling = label_sampling
        self.seg_net = seg_net
        self.output_size = tuple(int(s) for s in output_size)
        self.density_size = tuple(int(s) for s in (density_size or output_size))
        self.sampler = sampler if sampler is not None else DeformedSampler(sigma=10.0)
        self.deformation = deformation if deformation is not None else DeformationModule("paper")
        self.edge_weight = float(edge_weight)

    def density(self, image: torch.Tensor) -> torch.Tensor:
        """``N×1×h_d×w_d`` density from a full- or low-resolution ``N×3×H×W`` image."""
        return self.deformation(low_resolution_view(image, self.density_size))

    def forward(self, image: torch.Tensor, output_size: Size | None = None) -> DeformedOutput:
        size = tuple(output_size) if output_size is not None else self.output_size
        density = self.density(image)
        grid = self.sampler(density, size)
        deformed = sample_image(image, grid)
        return DeformedOutput(self.seg_net(deformed), grid, density, deformed)

    def sampled_labels(self, labels: torch.Tensor, output: DeformedOutput) -> torch.Tensor:
        """The training target ``Ŷ = G_d(Y)``: ``N×H×W`` class map sampled at the output's grid
        (``label_sampling``)."""
        return sample_labels(labels, output.grid, self.label_sampling)

    def edge_term(
        self, labels: torch.Tensor, output: DeformedOutput, normalize: Literal["none", "minmax"] = "none"
    ) -> torch.Tensor:
        """``γ·L_e``: the weighted edge loss of eq. 4 for full-resolution class maps ``N×H×W``."""
        n = labels.shape[0]
        labels_lr = sample_labels(labels, uniform_grid(n, self.density_size, labels.device))
        return self.edge_weight * edge_loss(output.density, edge_target(labels_lr), normalize)


def dynamic_output_size(
    image_size: Size, target: Size = (80, 800), rule: Literal["paper", "official"] = "paper"
) -> Size:
    """Output size for an elongated image (paper A.6), keeping its aspect ratio.

    ``target = (short, long)``. Paper rule: scale the short side to ``short`` or the long side to
    ``long`` and keep the candidate with fewer pixels (sides rounded down), so 368×7986 → 36×800.
    ``rule="official"`` reproduces the code's integer division (``r = side // target``, each side
    divided by ``r``), which gives 40×887 for the same image.
    """
    height, width = (int(s) for s in image_size)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive (got {image_size})")
    short_t, long_t = target
    short_side, long_side = min(height, width), max(height, width)
    if rule == "paper":
        if short_t * long_side <= long_t * short_side:  # scaling the short side gives fewer pixels
            short_out, long_out = short_t, long_side * short_t // short_side
        else:
            short_out, long_out = short_side * long_t // long_side, long_t
        short_out, long_out = max(1, min(short_out, short_side)), max(1, min(long_out, long_side))
        return (short_out, long_out) if height <= width else (long_out, short_out)
    if rule == "official":
        candidates = []
        for ratio in (max(1, short_side // short_t), max(1, long_side // long_t)):
            candidates.append((height // ratio, width // ratio))
        return min(candidates, key=lambda hw: hw[0] * hw[1])
    raise ValueError(f"rule must be 'paper' or 'official' (got {rule!r})")
