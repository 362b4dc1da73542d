"""Where a run's images come from: :class:`~training.datasets.SampleRecord` lists per data kind.

``idrid`` / ``ddr`` / ``folder``: a dataset in one of the layouts ``napari_m2mrf.io.datasets``
recognises, under ``root`` (validation under ``val_root`` when set). Splits are the layout's own
folder names, with ``train``/``test`` also naming IDRiD's ``a. Training Set``/``b. Testing Set``;
a plain folder has no splits. A class without a mask file for an image has no lesion there
(IDRiD has soft-exudate masks for only some images).
``pairs``: explicit image/label-image files, as the training widget exports napari layers.
``generated``: semi-synthetic fundus images with exact masks (``sample_data.fundus_samples``), written
once in IDRiD layout into the sample-data cache: ``generated_train`` images of series
``generated_seed`` for training, ``generated_val`` of series ``generated_seed + 1`` for validation.
``slides``: pyramidal slides with label pyramids (:mod:`training.slide_samples`); ``workspaces``:
the plugin's workspaces read the same way, e.g. their ``corrected`` labels.
"""

from __future__ import annotations

from pathlib import Path

from napari_m2mrf.classes import LesionClass, class_by_code
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.datasets import list_dataset
from napari_m2mrf.io.idrid_masks import IDRID_IMAGES_FOLDER, IDRID_SPLITS
from training.config import PYRAMID_KINDS, DataConfig
from training.datasets import SampleRecord
from training.slide_samples import SlideRecord, slide_classes

SPLIT_ALIASES = {"train": IDRID_SPLITS[0], "test": IDRID_SPLITS[1]}
GENERATED_SCALE = 0.5


def records(
    config: DataConfig, classes: tuple[LesionClass, ...], split: str, validation: bool
) -> list[SampleRecord] | list[SlideRecord]:
    """The records of ``split`` for training or (``validation``) for evaluation."""
    if config.kind in PYRAMID_KINDS:
        return slide_records(config, validation)
    if config.kind == "pairs":
        return pair_records(config.val_pairs if validation else config.pairs)
    if config.kind == "generated":
        root = generated_dataset(config, validation)
        return layout_records(root, IDRID_SPLITS[0], classes)
    root = Path(config.val_root if validation and config.val_root else config.root).expanduser()
    return layout_records(root, "" if config.kind == "folder" else split, classes)


def run_classes(config: DataConfig) -> tuple[LesionClass, ...]:
    """The classes of the model's channels: fundus lesions by code (workspaces included), or a
    slide label pyramid's classes by name (read from the first training slide)."""
    if config.kind == "slides":
        return slide_classes(slide_records(config, validation=False)[0], config.classes)
    try:
        return tuple(class_by_code(code) for code in config.classes)
    except KeyError as exc:
        raise UserError(f"data.classes: {exc.args[0]}") from None


def slide_records(config: DataConfig, validation: bool) -> list[SlideRecord]:
    """The training (or validation) slides."""
    paths = config.val_slides if validation else config.slides
    return [SlideRecord(Path(p).expanduser(), config.slide_labels, config.slide_level_size) for p in paths]


def has_validation(config: DataConfig) -> bool:
    """Whether the config names validation images."""
    if config.kind in PYRAMID_KINDS:
        return bool(config.val_slides)
    if config.kind == "pairs":
        return bool(config.val_pairs)
    if config.kind == "generated":
        return config.generated_val > 0
    return bool(config.val_split or config.val_root)


def pair_records(pairs: list[dict[str, str]]) -> list[SampleRecord]:
    """Records of ``[{image: path, labels: path}, ...]``; ``UserError`` for a missing file."""
    found = []
    for pair in pairs:
        image, labels = Path(pair["image"]).expanduser(), Path(pair["labels"]).expanduser()
        for path in (image, labels):
            if not path.is_file():
                raise UserError(f"{path}: no such file (listed in data pairs)")
        found.append(SampleRecord(image=image, labels=labels))
    return found


def layout_records(root: Path, split: str, classes: tuple[LesionClass, ...]) -> list[SampleRecord]:
    """Images of ``split`` (all images for ``""``) of the dataset under ``root`` with their masks."""
    wanted = {split, SPLIT_ALIASES.get(split, split)}  # "train" is DDR's train/ and IDRiD's "a. Training Set"
    samples = list_dataset(root, classes)
    chosen = [s for s in samples if not split or s.split in wanted]
    if not chosen:
        splits = sorted({s.split for s in samples})
        raise UserError(f"{root}: no images in split {split!r} (splits found: {', '.join(splits)})")
    return [SampleRecord(image=s.image, masks=dict(s.ground_truth.masks)) for s in chosen]


def generated_dataset(config: DataConfig, validation: bool) -> Path:
    """The folder holding the generated training (or validation) images, written on first use."""
    from napari_m2mrf.cache import cache_dir
    from sample_data.fundus_samples import GENERATOR_VERSION, write_fundus_dataset

    count = config.generated_val if validation else config.generated_train
    seed = config.generated_seed + (1 if validation else 0)
    base = Path(config.root).expanduser() if config.root else cache_dir("training")
    root = base / f"generated_v{GENERATOR_VERSION}_seed{seed}_n{count}"
    images = root / IDRID_IMAGES_FOLDER / IDRID_SPLITS[0]
    if not (images.is_dir() and len(list(images.glob("*.jpg"))) == count):
        write_fundus_dataset(root, count, seed=seed, scale=GENERATED_SCALE)
    return root


def check_data(config: DataConfig, train_split: str, val_split: str) -> None:
    """Refuse bad training data before a run builds a model or writes anything (``UserError``).

    Lists the training (and validation) records of ``config`` and checks every file through the
    read-side gate from its header: a regular file, a supported and not oversized image, masks and
    label images of the image's size. The first training record is also read whole (pixel types,
    NaN values, broken pixel data). Generated data (made by the run itself) is not checked; slides
    and workspaces only for being readable paths (their pyramids are checked when opened).
    """
    from napari_m2mrf.io.input_gate import check_path

    if config.kind == "generated":
        return
    classes = run_classes(config) if config.kind != "slides" else ()
    for validation in (False, True):
        if validation and not has_validation(config):
            continue
        if config.kind in PYRAMID_KINDS:
            for path in config.val_slides if validation else config.slides:
                check_path(Path(path).expanduser())
            continue
        found = records(config, classes, val_split if validation else train_split, validation)
        if not found:
            raise UserError(f"the {'validation' if validation else 'training'} set is empty: no images were found")
        for record in found:
            _check_record_headers(record)
        if not validation:
            from training.datasets import load_sample

            load_sample(found[0], classes, multilabel=True)


def _check_record_headers(record: SampleRecord) -> None:
    """The image's header, and its masks' or label image's size against it (nothing decoded)."""
    from napari_m2mrf.io.formats import inspect_source
    from napari_m2mrf.io.input_gate import check_path, mask_header

    check_path(record.image, folder_ok=False)
    info = inspect_source(record.image)
    for mask in record.masks.values():
        mask_header(mask, (info.height, info.width))
    if record.labels is not None:
        check_path(record.labels, folder_ok=False)
        if record.labels.suffix.lower() != ".npy":
            mask_header(record.labels, (info.height, info.width))

