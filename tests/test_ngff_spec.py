"""Every OME-NGFF group the project writes validates against the spec's models (ome-zarr-models).

Library: ome-zarr-models (pydantic models of OME-Zarr 0.4 and 0.5) checks the metadata that
``io/ngff.py`` builds as plain dicts, so a hand-built dict cannot drift from the spec unnoticed.
Checked: a ``convert`` workspace (NGFF 0.5 and 0.4), a fundus workspace with prediction and
corrected labels and probabilities (0.5 and 0.4), a slide inference workspace, and the sample
slide's OME-Zarr. Each multiscales group is validated as an image (or an image-label when it has
``image-label`` metadata) and each ``labels`` group as a labels group, arrays included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from slide_helpers import save_slide_model, small_slide

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.io import Workspace
from napari_m2mrf.io.fundus_results import save_fundus_labels

ome_zarr_models = pytest.importorskip("ome_zarr_models")
from ome_zarr_models import v04, v05  # noqa: E402
from pydantic_zarr.v2 import ArraySpec, GroupSpec  # noqa: E402

# ome-zarr-models 1.6 with pydantic-zarr 0.9 leaves the v0.4 group models' forward references
# unresolved ("`Labels` is not fully defined"); rebuilding them with the names fixes it.
for _model in (v04.Image, v04.ImageLabel, v04.Labels):
    _model.model_rebuild(_types_namespace={"GroupSpec": GroupSpec, "ArraySpec": ArraySpec})

CODES = [c.code for c in FUNDUS_CLASSES]


def _ngff_version(group: zarr.Group) -> str:
    return "0.5" if group.metadata.zarr_format == 3 else "0.4"


def _metadata(group: zarr.Group) -> dict:
    attrs = dict(group.attrs)
    return dict(attrs["ome"]) if "ome" in attrs else attrs


def validate_tree(root: Path) -> dict[str, str]:
    """Validate every NGFF group under ``root``; returns ``{group path: model name}`` of what was checked."""
    top = zarr.open_group(str(root), mode="r")
    models = v05 if _ngff_version(top) == "0.5" else v04
    checked: dict[str, str] = {}
    for path, group in [("", top), *_all_groups(top)]:
        metadata = _metadata(group)
        assert _ngff_version(group) == _ngff_version(top), f"{root}/{path}: mixed zarr formats"
        if "multiscales" in metadata:
            model = models.ImageLabel if "image-label" in metadata else models.Image
        elif "labels" in metadata:
            model = models.Labels
        else:
            continue
        model.from_zarr(group)  # raises a ValidationError naming the offending field
        checked[path] = model.__name__
    return checked


def _all_groups(group: zarr.Group, prefix: str = ""):
    for name, child in sorted(group.groups()):
        path = f"{prefix}{name}"
        yield path, child
        yield from _all_groups(child, f"{path}/")


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory):
    return small_slide(tmp_path_factory.mktemp("slide"))


def test_sample_slide_ome_zarr(slide) -> None:
    checked = validate_tree(slide.ome_zarr)
    assert checked == {"": "Image", "labels": "Labels", "labels/ground_truth": "ImageLabel"}


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_convert_workspace(slide, tmp_path: Path, version: str) -> None:
    from napari_m2mrf.cli import main

    out = tmp_path / "converted.zarr"
    assert main(["convert", str(slide.ome_zarr), str(out), "--ngff", version, "--quiet"]) == 0
    assert validate_tree(out) == {"": "Image", "labels": "Labels", "labels/ground_truth": "ImageLabel"}


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_fundus_workspace_with_labels_and_probabilities(tmp_path: Path, version: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (600, 700, 3), dtype=np.uint8)
    labels = np.zeros((600, 700), np.uint8)
    labels[100:180, 200:300], labels[400:403, 50:53] = 1, 4
    path = tmp_path / "eye.m2mrf.zarr"
    Workspace.create(path, ngff_version=version, source=tmp_path / "eye.png")
    workspace = save_fundus_labels(path, labels, prediction=labels, image=image)
    workspace.write_probabilities(rng.random((4, 150, 175)), downsample=4, class_names=CODES)
    checked = validate_tree(path)
    assert checked == {
        "": "Image", "labels": "Labels", "labels/corrected": "ImageLabel", "labels/prediction": "ImageLabel",
    }
    # the pyramid form of the probabilities (slide runs) is a multiscale image of its own
    with workspace.new_probabilities((4, 300, 350), downsample=2, class_codes=CODES, pixel_size_um=0.5) as level0:
        level0[:] = rng.random((4, 300, 350))
    assert validate_tree(path)["probabilities"] == "Image"


def test_slide_inference_workspace(slide, tmp_path: Path) -> None:
    from napari_m2mrf.inference.slide import SlideRequest, run_slide_segmentation

    model = save_slide_model(tmp_path / "slide.safetensors")
    workspace = tmp_path / "slide.m2mrf.zarr"
    run_slide_segmentation(slide.ome_zarr, SlideRequest(str(model), device="cpu", workspace=workspace))
    checked = validate_tree(workspace)
    assert checked.get("labels/prediction") == "ImageLabel" and checked.get("labels") == "Labels", checked
    assert checked.get("probabilities") == "Image", checked
