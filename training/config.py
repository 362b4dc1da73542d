"""A training run's configuration: nested dataclasses with a strict YAML/JSON round trip.

``TrainingConfig.from_dict(config.to_dict()) == config`` for every config, and the same through
YAML and JSON files. Unknown keys, wrong types and impossible values raise ``UserError`` naming
the file and the key. Sizes are ``[height, width]`` in pixels; learning rates are per iteration.
No torch import here, so reading a config is cheap.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_m2mrf.errors import UserError

IDRID_MEAN = [116.513, 56.437, 16.309]
IDRID_STD = [80.206, 41.232, 13.293]

DATA_KINDS = ("idrid", "ddr", "folder", "pairs", "generated", "slides", "workspaces")
PYRAMID_KINDS = ("slides", "workspaces")
LOSSES = ("dice", "bce", "cross_entropy", "focal")
MULTILABEL_LOSSES = ("dice", "bce")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("poly", "step", "constant")
SAMPLERS = ("deformed", "uniform")
DEFORMATIONS = ("paper", "official")
EDGE_NORMALIZATIONS = ("none", "minmax")


@dataclass
class DataConfig:
    """Where the images and masks come from (details in :mod:`training.sources`).

    ``kind``: ``idrid`` / ``ddr`` (dataset layouts under ``root``), ``folder`` (``root/images`` +
    ``root/masks/<CODE>/``), ``pairs`` (explicit ``{image, labels}`` files, e.g. exported napari
    layers; ``labels`` is an (H, W) label image whose values are class labels), ``generated``
    (semi-synthetic fundus images written into the cache, or ``root`` when set, on first use).
    Validation: ``val_split`` of ``root`` or all of ``val_root``, ``val_pairs``, or
    ``generated_val`` images, or ``val_slides``; none named: no evaluation. ``slides``: pyramidal
    slides with a label pyramid named ``slide_labels`` (OME-Zarr ``labels/<name>`` or OME-TIFF
    ``ground_truth``), each read whole at the coarsest level whose long side is at least
    ``slide_level_size`` pixels. ``workspaces``: plugin workspaces (``<name>.m2mrf.zarr``) listed
    in ``slides``/``val_slides``, trained on their ``slide_labels`` pyramid (e.g. ``corrected``,
    the user's corrections) with fundus label values. ``classes``: in model-channel order, lesion
    codes (fundus, workspaces) or the label pyramid's class names (slides).
    ``mean``/``std``: RGB normalisation on the 0-255 scale.
    """

    kind: str = "generated"
    root: str = ""
    val_root: str = ""
    train_split: str = "train"
    val_split: str = ""
    pairs: list[dict[str, str]] = field(default_factory=list)
    val_pairs: list[dict[str, str]] = field(default_factory=list)
    generated_train: int = 8
    generated_val: int = 2
    generated_seed: int = 0
    slides: list[str] = field(default_factory=list)
    val_slides: list[str] = field(default_factory=list)
    slide_labels: str = "ground_truth"
    slide_level_size: int = 1024
    classes: list[str] = field(default_factory=lambda: ["EX", "HE", "SE", "MA"])
    mean: list[float] = field(default_factory=lambda: list(IDRID_MEAN))
    std: list[float] = field(default_factory=lambda: list(IDRID_STD))
    cache_in_memory: bool = True
    num_workers: int = 0


@dataclass
class AugmentConfig:
    """Training-time transforms (M2MRF paper §4.1 and its official pipeline; order in
    :func:`training.transforms.training_transform`).

    ``resize``: keep-ratio fit into ``[h, w]`` (IDRiD official: 960×1440 → 956×1440); also the
    evaluation size. Empty: images are used at their own size. ``scale_range``: random rescale
    factor range (``[1, 1]`` = off). ``crop``: random crop ``[h, w]`` (padded with zeros when the
    image is smaller; empty = no crop). ``rotate90``: random 0/90/180/270°. ``hflip``/``vflip``:
    flip probabilities. ``photometric``: brightness/contrast/saturation/hue jitter.
    """

    resize: list[int] = field(default_factory=lambda: [960, 1440])
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    crop: list[int] = field(default_factory=lambda: [960, 1440])
    rotate90: bool = True
    hflip: float = 0.5
    vflip: float = 0.5
    photometric: bool = True


@dataclass
class ModelConfig:
    """The network: a registry name plus its build options (``napari_m2mrf.models.build_model``).

    ``init_checkpoint``: fine-tune from this model checkpoint (weights only; the optimiser starts
    fresh). ``sync_batchnorm``: synchronise BatchNorm statistics across processes under torchrun.
    """

    name: str = "m2mrf_hrnetv2_w48"
    options: dict[str, Any] = field(default_factory=lambda: {"variant": "D"})
    init_checkpoint: str = ""
    sync_batchnorm: bool = True


@dataclass
class DeformConfig:
    """Learned deformed downsampling (Jin et al.; ``napari_m2mrf.models.deform``) around the model.

    ``enabled``: the network sees the image through a :class:`DeformedSegmenter` that samples an
    ``output_size`` ``[h, w]`` image at a grid computed from a density map of ``density_size``
    (empty: the output size); targets are the labels sampled at the same grid, and
    ``loss.edge_weight`` (γ, paper: 100) adds the edge loss. ``sampler``: ``deformed`` or the
    ``uniform`` baseline at the same sampling budget. ``sigma``: Gaussian σ in density pixels.
    ``deformation``: ``paper`` ({24, 24, 3} widths) or ``official`` (192/192/24, ReLU6).
    ``edge_normalize``: ``none`` (paper's MSE) or ``minmax`` (official).
    """

    enabled: bool = False
    output_size: list[int] = field(default_factory=lambda: [64, 64])
    density_size: list[int] = field(default_factory=list)
    sampler: str = "deformed"
    sigma: float = 10.0
    deformation: str = "paper"
    edge_normalize: str = "none"


@dataclass
class LossConfig:
    """Segmentation loss. ``dice``: sigmoid binary Dice per lesion (official M2MRF), ``bce``:
    sigmoid binary cross-entropy, ``cross_entropy`` / ``focal`` (Jin et al.): softmax over classes
    with background as channel 0. ``edge_weight``: γ of Jin et al.'s edge loss (deformed models)."""

    name: str = "dice"
    smooth: float = 1e-5
    focal_gamma: float = 2.0
    edge_weight: float = 0.0


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule, evaluated per iteration.

    ``poly``: ``(lr - min_lr) · (1 - it / iterations) ** power + min_lr`` (mmseg's policy);
    ``step``: ``lr · step_gamma ** (it // step_every)``; ``constant``: ``lr``.
    """

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "poly"
    power: float = 0.9
    min_lr: float = 1e-4
    step_every: int = 0
    step_gamma: float = 0.1


@dataclass
class RunConfig:
    """Length, batch, devices, logging and checkpoints of the run.

    ``batch_size`` is the global batch (split evenly over torchrun processes). ``device``:
    ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``. ``amp``: autocast (float16)
    on GPU; ignored on CPU. ``eval_every``/``checkpoint_every``: in iterations (0 = only at the
    end). ``threads``: torch CPU threads (0 = torch's default). ``best_metric``: the evaluation
    metric (mean over classes) whose maximum selects ``best``.
    """

    iterations: int = 40000
    batch_size: int = 4
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    eval_every: int = 0
    checkpoint_every: int = 1000
    output_dir: str = "runs/m2mrf"
    threads: int = 0
    tensorboard: bool = False
    best_metric: str = "aupr_official_11pt"


@dataclass
class TrainingConfig:
    """A whole training run."""

    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    deform: DeformConfig = field(default_factory=DeformConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts/lists/scalars (what YAML and JSON hold)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainingConfig:
        """Build and validate a config; missing keys take their defaults. ``source`` names the
        file in error messages. Raises ``UserError`` for unknown keys, wrong types, bad values."""
        config = _from_dict(cls, values, source, "")
        validate(config, source)
        return config

    def with_overrides(self, assignments: list[str], source: str = "--set") -> TrainingConfig:
        """A copy with ``section.key=value`` assignments applied (value parsed as YAML)."""
        import yaml

        values = self.to_dict()
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            parts = key.strip().split(".")
            if not sep or len(parts) != 2 or parts[0] not in values or parts[1] not in values[parts[0]]:
                raise UserError(f"{source}: expected SECTION.KEY=VALUE with a known key, got {assignment!r}")
            values[parts[0]][parts[1]] = yaml.safe_load(text)
        return TrainingConfig.from_dict(values, source)


def load_config(path: str | os.PathLike[str]) -> TrainingConfig:
    """Read a ``.yaml``/``.yml`` or ``.json`` config; ``UserError`` naming the file on any problem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({exc})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of sections (data, augment, model, deform, loss, optim, run)")
    return TrainingConfig.from_dict(values, str(path))


def save_config(config: TrainingConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as YAML (or JSON for a ``.json`` suffix); returns the path."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = config.to_dict()
    if path.suffix.lower() == ".json":
        text = json.dumps(values, indent=2) + "\n"
    else:
        text = yaml.safe_dump(values, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def _from_dict(cls: type, values: Any, source: str, where: str) -> Any:
    if not isinstance(values, dict):
        raise UserError(f"{source}: section {where or 'top level'!r} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(
            f"{source}: unknown key {where + '.' if where else ''}{unknown[0]} (valid: {', '.join(fields)})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, source, key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, source, key)
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{source}: {key} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{source}: {key} must be a mapping, got {value!r}")
        _, item = typing.get_args(hint)
        return {str(k): _coerce(item, v, source, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise UserError(f"{source}: {key} must be {hint.__name__}, got {value!r}")


def validate(config: TrainingConfig, source: str = "config") -> None:
    """Raise ``UserError`` for values no run can use."""

    def check(condition: bool, message: str) -> None:
        if not condition:
            raise UserError(f"{source}: {message}")

    data, augment, loss, optim, run = config.data, config.augment, config.loss, config.optim, config.run
    check(data.kind in DATA_KINDS, f"data.kind must be one of {', '.join(DATA_KINDS)}, got {data.kind!r}")
    check(data.kind not in ("idrid", "ddr", "folder") or bool(data.root), f"data.root is needed for kind {data.kind!r}")
    check(data.kind != "pairs" or bool(data.pairs), "data.pairs must list {image, labels} files for kind 'pairs'")
    check(data.kind not in PYRAMID_KINDS or bool(data.slides), f"data.slides must list the files for kind {data.kind!r}")
    check(data.slide_level_size > 0, "data.slide_level_size must be > 0")
    for pair in data.pairs + data.val_pairs:
        check(set(pair) == {"image", "labels"}, f"each data pair needs exactly 'image' and 'labels', got {pair}")
    check(len(data.classes) >= 1, "data.classes must name at least one class")
    check(len(data.mean) == 3 and len(data.std) == 3 and min(data.std) > 0, "data.mean/std need 3 values, std > 0")
    check(data.num_workers >= 0, "data.num_workers must be >= 0")
    for name in ("resize", "crop"):
        size = getattr(augment, name)
        check(len(size) in (0, 2) and all(s > 0 for s in size), f"augment.{name} must be [] or [height, width] > 0")
    check(
        run.batch_size == 1 or bool(augment.crop),
        "augment.crop is needed for batches of more than one image (images differ in size)",
    )
    scales = augment.scale_range
    check(len(scales) == 2 and 0 < scales[0] <= scales[1], "augment.scale_range must be [low, high], 0 < low <= high")
    check(0 <= augment.hflip <= 1 and 0 <= augment.vflip <= 1, "augment.hflip/vflip are probabilities in [0, 1]")
    check(loss.name in LOSSES, f"loss.name must be one of {', '.join(LOSSES)}, got {loss.name!r}")
    check(loss.smooth >= 0 and loss.focal_gamma >= 0 and loss.edge_weight >= 0, "loss values must be >= 0")
    deform = config.deform
    if deform.enabled:
        check(loss.name not in MULTILABEL_LOSSES, "deformed models train with loss.name cross_entropy or focal")
        for name in ("output_size", "density_size"):
            size = getattr(deform, name)
            check(len(size) in (0, 2) and all(v > 0 for v in size), f"deform.{name} must be [height, width] > 0")
        check(len(deform.output_size) == 2, "deform.output_size must be [height, width]")
        check(deform.sampler in SAMPLERS, f"deform.sampler must be one of {', '.join(SAMPLERS)}")
        check(deform.deformation in DEFORMATIONS, f"deform.deformation must be one of {', '.join(DEFORMATIONS)}")
        check(deform.edge_normalize in EDGE_NORMALIZATIONS, f"deform.edge_normalize must be one of {', '.join(EDGE_NORMALIZATIONS)}")
        check(deform.sigma > 0, "deform.sigma must be > 0")
    else:
        check(loss.edge_weight == 0, "loss.edge_weight needs deform.enabled (the edge loss acts on the density map)")
    check(optim.name in OPTIMIZERS, f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {optim.name!r}")
    check(optim.schedule in SCHEDULES, f"optim.schedule must be one of {', '.join(SCHEDULES)}")
    check(optim.lr > 0 and optim.min_lr >= 0, "optim.lr must be > 0 and optim.min_lr >= 0")
    check(optim.schedule != "step" or optim.step_every > 0, "optim.step_every must be > 0 for the step schedule")
    check(len(optim.betas) == 2, "optim.betas must be [beta1, beta2]")
    check(run.iterations > 0 and run.batch_size > 0, "run.iterations and run.batch_size must be > 0")
    check(run.eval_every >= 0 and run.checkpoint_every >= 0 and run.threads >= 0, "run intervals must be >= 0")
    check(bool(run.output_dir), "run.output_dir must be set")
    check(
        run.device == "auto" or run.device == "cpu" or run.device.split(":")[0] == "cuda",
        f"run.device must be auto, cpu, cuda or cuda:N, got {run.device!r}",
    )
