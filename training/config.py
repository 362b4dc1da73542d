"""A training run's configuration: nested pydantic models with a strict YAML/JSON round trip.

Library: pydantic v2 validates the sections (``extra="forbid"``, ``Literal`` choices, ``Field``
bounds, one ``model_validator`` for the cross-field rules) instead of hand-written coercion; YAML
is still read with ``yaml.safe_load``. ``TrainingConfig.from_dict(config.to_dict()) == config``
for every config, and the same through YAML and JSON files. Unknown keys, wrong types and
impossible values raise ``UserError`` naming the file and the key (:func:`_user_error` maps
pydantic's errors to those messages). Sections are plain attribute containers: assigning to a
field does not validate; ``from_dict``/``load_config``/``with_overrides`` do. Sizes are
``[height, width]`` in pixels; learning rates are per iteration. No torch import here, so reading
a config is cheap.
"""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from napari_m2mrf.errors import UserError
from napari_m2mrf.io.input_gate import load_yaml

IDRID_MEAN = [116.513, 56.437, 16.309]
IDRID_STD = [80.206, 41.232, 13.293]

# Scalars are strict (no "1" -> 1, no true -> 1); an int is accepted where a float is expected.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]

DataKind = Literal["idrid", "ddr", "folder", "pairs", "generated", "slides", "workspaces"]
LossName = Literal["dice", "bce", "dice_bce", "cross_entropy", "focal"]
OptimizerName = Literal["sgd", "adam"]
Schedule = Literal["poly", "step", "constant"]
Sampler = Literal["deformed", "uniform"]
Deformation = Literal["paper", "official"]
EdgeNormalization = Literal["none", "minmax"]

DATA_KINDS = typing.get_args(DataKind)
PYRAMID_KINDS = ("slides", "workspaces")
LOSSES = typing.get_args(LossName)
MULTILABEL_LOSSES = ("dice", "bce", "dice_bce")
OPTIMIZERS = typing.get_args(OptimizerName)
SCHEDULES = typing.get_args(Schedule)
SAMPLERS = typing.get_args(Sampler)
DEFORMATIONS = typing.get_args(Deformation)
EDGE_NORMALIZATIONS = typing.get_args(EdgeNormalization)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
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

    kind: DataKind = "generated"
    root: Str = ""
    val_root: Str = ""
    train_split: Str = "train"
    val_split: Str = ""
    pairs: list[dict[Str, Str]] = Field(default_factory=list)
    val_pairs: list[dict[Str, Str]] = Field(default_factory=list)
    generated_train: Int = 8
    generated_val: Int = 2
    generated_seed: Int = 0
    slides: list[Str] = Field(default_factory=list)
    val_slides: list[Str] = Field(default_factory=list)
    slide_labels: Str = "ground_truth"
    slide_level_size: Int = Field(1024, gt=0)
    classes: list[Str] = Field(default_factory=lambda: ["EX", "HE", "SE", "MA"], min_length=1)
    mean: list[Float] = Field(default_factory=lambda: list(IDRID_MEAN), min_length=3, max_length=3)
    std: list[Annotated[Float, Field(gt=0)]] = Field(default_factory=lambda: list(IDRID_STD), min_length=3, max_length=3)
    cache_in_memory: Bool = True
    num_workers: Int = Field(0, ge=0)


class AugmentConfig(_Section):
    """Training-time transforms (M2MRF paper §4.1 and its official pipeline; order in
    :func:`training.transforms.training_transform`).

    ``resize``: keep-ratio fit into ``[h, w]`` (IDRiD official: 960×1440 → 956×1440); also the
    evaluation size. Empty: images are used at their own size. ``scale_range``: random rescale
    factor range (``[1, 1]`` = off). ``crop``: random crop ``[h, w]`` (padded with zeros when the
    image is smaller; empty = no crop). ``rotate90``: random 0/90/180/270°. ``hflip``/``vflip``:
    flip probabilities. ``photometric``: brightness/contrast/saturation/hue jitter.
    ``lesion_crop``: probability that a crop is centred (with jitter) on a lesion pixel of a class
    drawn uniformly among the classes present in the sample, so rare small lesions are seen as
    often as common ones (0 = plain random crops, the official pipeline).
    """

    resize: list[Annotated[Int, Field(gt=0)]] = Field(default_factory=lambda: [960, 1440], max_length=2)
    scale_range: list[Annotated[Float, Field(gt=0)]] = Field(default_factory=lambda: [0.5, 2.0], min_length=2, max_length=2)
    crop: list[Annotated[Int, Field(gt=0)]] = Field(default_factory=lambda: [960, 1440], max_length=2)
    rotate90: Bool = True
    hflip: Float = Field(0.5, ge=0, le=1)
    vflip: Float = Field(0.5, ge=0, le=1)
    photometric: Bool = True
    lesion_crop: Float = Field(0.0, ge=0, le=1)


class ModelConfig(_Section):
    """The network: a registry name plus its build options (``napari_m2mrf.models.build_model``).

    ``init_checkpoint``: fine-tune from this model checkpoint (weights only; the optimiser starts
    fresh). ``sync_batchnorm``: synchronise BatchNorm statistics across processes under torchrun.
    """

    name: Str = "m2mrf_hrnetv2_w48"
    options: dict[Str, Any] = Field(default_factory=lambda: {"variant": "D"})
    init_checkpoint: Str = ""
    sync_batchnorm: Bool = True


class DeformConfig(_Section):
    """Learned deformed downsampling (Jin et al.; ``napari_m2mrf.models.deform``) around the model.

    ``enabled``: the network sees the image through a :class:`DeformedSegmenter` that samples an
    ``output_size`` ``[h, w]`` image at a grid computed from a density map of ``density_size``
    (empty: the output size); targets are the labels sampled at the same grid, and
    ``loss.edge_weight`` (γ, paper: 100) adds the edge loss. ``sampler``: ``deformed`` or the
    ``uniform`` baseline at the same sampling budget. ``sigma``: Gaussian σ in density pixels.
    ``deformation``: ``paper`` ({24, 24, 3} widths) or ``official`` (192/192/24, ReLU6).
    ``edge_normalize``: ``none`` (paper's MSE) or ``minmax`` (official).
    """

    enabled: Bool = False
    output_size: list[Annotated[Int, Field(gt=0)]] = Field(default_factory=lambda: [64, 64], min_length=2, max_length=2)
    density_size: list[Annotated[Int, Field(gt=0)]] = Field(default_factory=list, max_length=2)
    sampler: Sampler = "deformed"
    sigma: Float = Field(10.0, gt=0)
    deformation: Deformation = "paper"
    edge_normalize: EdgeNormalization = "none"


class LossConfig(_Section):
    """Segmentation loss. ``dice``: sigmoid binary Dice per lesion (official M2MRF), ``bce``:
    sigmoid binary cross-entropy, ``dice_bce``: their sum with the cross-entropy weighted by
    ``bce_weight`` (Dice alone leaves probabilities under-confident and poorly ranked across
    images, which the dataset-level AUPR punishes), ``cross_entropy`` / ``focal`` (Jin et al.): softmax over classes
    with background as channel 0. ``edge_weight``: γ of Jin et al.'s edge loss (deformed models)."""

    name: LossName = "dice"
    smooth: Float = Field(1e-5, ge=0)
    focal_gamma: Float = Field(2.0, ge=0)
    bce_weight: Float = Field(1.0, ge=0)
    edge_weight: Float = Field(0.0, ge=0)


class OptimConfig(_Section):
    """Optimiser and learning-rate schedule, evaluated per iteration.

    ``poly``: ``(lr - min_lr) · (1 - it / iterations) ** power + min_lr`` (mmseg's policy);
    ``step``: ``lr · step_gamma ** (it // step_every)``; ``constant``: ``lr``.
    """

    name: OptimizerName = "sgd"
    lr: Float = Field(0.01, gt=0)
    momentum: Float = 0.9
    weight_decay: Float = 5e-4
    betas: list[Float] = Field(default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2)
    schedule: Schedule = "poly"
    power: Float = 0.9
    min_lr: Float = Field(1e-4, ge=0)
    step_every: Int = 0
    step_gamma: Float = 0.1


class RunConfig(_Section):
    """Length, batch, devices, logging and checkpoints of the run.

    ``batch_size`` is the global batch (split evenly over torchrun processes). ``device``:
    ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``. ``amp``: autocast (float16)
    on GPU; ignored on CPU. ``eval_every``/``checkpoint_every``: in iterations (0 = only at the
    end). ``threads``: torch CPU threads (0 = torch's default). ``best_metric``: the evaluation
    metric (mean over classes) whose maximum selects ``best``.
    """

    iterations: Int = Field(40000, gt=0)
    batch_size: Int = Field(4, gt=0)
    seed: Int = 0
    device: Str = Field("auto", pattern=r"^(auto|cpu|cuda(:.*)?)$")
    amp: Bool = True
    eval_every: Int = Field(0, ge=0)
    checkpoint_every: Int = Field(1000, ge=0)
    output_dir: Str = Field("runs/m2mrf", min_length=1)
    threads: Int = Field(0, ge=0)
    tensorboard: Bool = False
    best_metric: Str = "aupr_official_11pt"


class TrainingConfig(_Section):
    """A whole training run."""

    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    deform: DeformConfig = Field(default_factory=DeformConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TrainingConfig:
        """The rules that tie fields (and sections) together."""

        def check(condition: bool, message: str) -> None:
            if not condition:
                raise PydanticCustomError("config", "{message}", {"message": message})

        data, augment, deform, loss, optim = self.data, self.augment, self.deform, self.loss, self.optim
        check(data.kind not in ("idrid", "ddr", "folder") or bool(data.root), f"data.root is needed for kind {data.kind!r}")
        check(data.kind != "pairs" or bool(data.pairs), "data.pairs must list {image, labels} files for kind 'pairs'")
        check(data.kind not in PYRAMID_KINDS or bool(data.slides), f"data.slides must list the files for kind {data.kind!r}")
        for pair in data.pairs + data.val_pairs:
            check(set(pair) == {"image", "labels"}, f"each data pair needs exactly 'image' and 'labels', got {pair}")
        for name in ("resize", "crop"):
            check(len(getattr(augment, name)) != 1, f"augment.{name} must be [] or [height, width] > 0")
        check(
            bool(augment.resize or augment.crop),
            "augment.resize or augment.crop is needed: the exported model records the input size it segments at",
        )
        check(
            self.run.batch_size == 1 or bool(augment.crop),
            "augment.crop is needed for batches of more than one image (images differ in size)",
        )
        low, high = augment.scale_range
        check(low <= high, "augment.scale_range must be [low, high], 0 < low <= high")
        if deform.enabled:
            check(loss.name not in MULTILABEL_LOSSES, "deformed models train with loss.name cross_entropy or focal")
            check(augment.lesion_crop == 0, "augment.lesion_crop needs per-class masks (fundus models), not a deformed model")
            check(len(deform.density_size) != 1, "deform.density_size must be [height, width] > 0")
        else:
            check(loss.edge_weight == 0, "loss.edge_weight needs deform.enabled (the edge loss acts on the density map)")
        check(optim.schedule != "step" or optim.step_every > 0, "optim.step_every must be > 0 for the step schedule")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts/lists/scalars (what YAML and JSON hold)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainingConfig:
        """Build and validate a config; missing keys take their defaults. ``source`` names the
        file in error messages. Raises ``UserError`` for unknown keys, wrong types, bad values."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise _user_error(exc, source) from None

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
        values = json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text, name=str(path))
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


# What a failed bound or length check says, by field (list indices dropped from the key).
_BOUND_MESSAGES = {
    "data.slide_level_size": "data.slide_level_size must be > 0",
    "data.classes": "data.classes must name at least one class",
    "data.mean": "data.mean/std need 3 values, std > 0",
    "data.std": "data.mean/std need 3 values, std > 0",
    "data.num_workers": "data.num_workers must be >= 0",
    "augment.resize": "augment.resize must be [] or [height, width] > 0",
    "augment.crop": "augment.crop must be [] or [height, width] > 0",
    "augment.scale_range": "augment.scale_range must be [low, high], 0 < low <= high",
    "augment.hflip": "augment.hflip/vflip are probabilities in [0, 1]",
    "augment.vflip": "augment.hflip/vflip are probabilities in [0, 1]",
    "deform.output_size": "deform.output_size must be [height, width] > 0",
    "deform.density_size": "deform.density_size must be [height, width] > 0",
    "deform.sigma": "deform.sigma must be > 0",
    "loss.smooth": "loss values must be >= 0",
    "loss.focal_gamma": "loss values must be >= 0",
    "loss.edge_weight": "loss values must be >= 0",
    "optim.lr": "optim.lr must be > 0 and optim.min_lr >= 0",
    "optim.min_lr": "optim.lr must be > 0 and optim.min_lr >= 0",
    "optim.betas": "optim.betas must be [beta1, beta2]",
    "run.iterations": "run.iterations and run.batch_size must be > 0",
    "run.batch_size": "run.iterations and run.batch_size must be > 0",
    "run.eval_every": "run intervals must be >= 0",
    "run.checkpoint_every": "run intervals must be >= 0",
    "run.threads": "run intervals must be >= 0",
    "run.output_dir": "run.output_dir must be set",
}
_TYPE_NAMES = {"int_type": "int", "float_type": "float", "string_type": "str", "bool_type": "bool",
               "list_type": "a list", "dict_type": "a mapping"}


def _user_error(exc: ValidationError, source: str) -> UserError:
    """The first of pydantic's errors as the config's own message: ``<source>: <key> ...``."""
    error = exc.errors()[0]
    loc, kind, value = error["loc"], error["type"], error.get("input")
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    field_key = ".".join(str(p) for p in loc if not isinstance(p, int))
    section: Any = TrainingConfig
    for part in loc[:-1]:  # the model that holds the failing key
        fields = getattr(section, "model_fields", {})
        section = fields[part].annotation if part in fields else None
    if kind == "extra_forbidden":
        message = f"unknown key {key} (valid: {', '.join(section.model_fields)})"
    elif kind == "model_type":
        message = f"section {key or 'top level'!r} must be a mapping, got {value!r}"
    elif kind in _TYPE_NAMES:
        message = f"{key} must be {_TYPE_NAMES[kind]}, got {value!r}"
    elif kind == "literal_error":
        choices = typing.get_args(section.model_fields[loc[-1]].annotation)
        message = f"{key} must be one of {', '.join(choices)}, got {value!r}"
    elif kind == "string_pattern_mismatch" and field_key == "run.device":
        message = f"run.device must be auto, cpu, cuda or cuda:N, got {value!r}"
    elif field_key in _BOUND_MESSAGES:
        message = _BOUND_MESSAGES[field_key]
    else:  # the cross-field rules ("config") and anything unforeseen
        message = error["msg"] if kind == "config" else f"{key}: {error['msg']}"
    return UserError(f"{source}: {message}")
