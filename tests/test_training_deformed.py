"""Training a learned deformed-downsampling model (Jin et al.) on a generated slide with a label
pyramid: focal + γ·edge loss, the deformation module learns, evaluation through the reverse sampler."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_m2mrf.errors import UserError
from napari_m2mrf.models.deform import (
    DeformedSampler,
    DeformedSegmenter,
    UniformSampler,
)
from napari_m2mrf.models.checkpoints import is_deformed, load_checkpoint as load_model_file
from training.config import TrainingConfig
from training.events import CheckpointSaved, Evaluated, Finished, IterationDone
from training.loop import Trainer
from training.slide_samples import SlideRecord, load_slide_sample, slide_classes


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sample_data.slide_sample import generate_slide

    return generate_slide(tmp_path_factory.mktemp("slide"), size=1024, seed=3).ome_zarr


def slide_config(slide: Path, output: Path, sampler: str) -> TrainingConfig:
    return TrainingConfig.from_dict(
        {
            "data": {"kind": "slides", "slides": [str(slide)], "val_slides": [str(slide)],
                     "classes": ["tumour", "vessel", "necrosis"], "slide_level_size": 256},
            "augment": {"resize": [128, 128], "crop": [128, 128], "scale_range": [1.0, 1.0], "rotate90": False,
                        "hflip": 0.5, "vflip": 0.0, "photometric": False},
            "model": {"name": "hrnetv2_w18s", "options": {}},
            "deform": {"enabled": True, "output_size": [64, 64], "density_size": [32, 32], "sigma": 3.0,
                       "sampler": sampler},
            "loss": {"name": "focal", "edge_weight": 100.0},
            "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step", "step_every": 100},
            "run": {"iterations": 3, "batch_size": 1, "device": "cpu", "threads": 1, "best_metric": "iou",
                    "output_dir": str(output)},
        }
    )


def test_deformed_training_learns_the_sampler(slide: Path, tmp_path: Path) -> None:
    config = slide_config(slide, tmp_path / "run", "deformed")
    events = list(Trainer(config).run())
    steps = [e for e in events if isinstance(e, IterationDone)]
    assert len(steps) == 3 and all(set(e.losses) == {"loss", "focal", "edge"} for e in steps)
    for e in steps:
        assert e.losses["loss"] == pytest.approx(e.losses["focal"] + e.losses["edge"], rel=1e-5)
    evaluation = next(e for e in events if isinstance(e, Evaluated))
    assert set(evaluation.per_class) == {"tumour", "vessel", "necrosis"}
    assert 0.0 <= evaluation.mean["aupr_dense"] <= 1.0
    assert isinstance(events[-1], Finished) and events[-1].best.endswith("best.safetensors")

    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["iteration"] == 3
    torch.manual_seed(config.run.seed)
    from training.networks import build_network
    from training.sources import run_classes

    initial = build_network(config, run_classes(config.data), multilabel=False).state_dict()
    changed = [k for k in initial if k.startswith("deformation.") and not torch.equal(initial[k], state["model"][k])]
    assert any(k.endswith("weight") for k in changed), "the deformation module did not learn"
    kinds = {e.kind for e in events if isinstance(e, CheckpointSaved)}
    assert kinds == {"best", "last"}

    # best and last are plugin checkpoints (safetensors, no pickled code), loadable as they were trained
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["best.safetensors", "last.safetensors"]
    assert not list(run.glob("*.model.pt"))
    model, meta = load_model_file(run / "last.safetensors")
    assert isinstance(model, DeformedSegmenter) and isinstance(model.sampler, DeformedSampler) and is_deformed(meta)
    assert meta["deformed"]["output_size"] == [64, 64] and meta["deformed"]["density_size"] == [32, 32]
    assert meta["deformed"]["sigma"] == 3.0 and meta["output"] == "softmax"
    assert [c["name"] for c in meta["classes"]] == ["Background", "tumour", "vessel", "necrosis"]
    assert meta["provenance"]["iteration"] == 3
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    best, best_meta = load_model_file(run / "best.safetensors")
    assert "iou" in best_meta["provenance"]["metrics"]
    assert best(torch.rand(1, 3, 128, 128)).logits.shape == (1, 4, 64, 64)


def test_uniform_sampler_baseline_trains_with_the_same_budget(slide: Path, tmp_path: Path) -> None:
    events = list(Trainer(slide_config(slide, tmp_path / "run", "uniform")).run())
    assert isinstance(events[-1], Finished) and len([e for e in events if isinstance(e, IterationDone)]) == 3
    model, meta = load_model_file(events[-1].best)
    assert isinstance(model.sampler, UniformSampler) and meta["deformed"]["sampler"] == "uniform"


def test_slide_classes_and_levels(slide: Path) -> None:
    record = SlideRecord(slide, "ground_truth", 256)
    classes = slide_classes(record, ["vessel", "tumour"])
    assert [(c.code, c.label) for c in classes] == [("vessel", 2), ("tumour", 1)]
    sample = load_slide_sample(record, classes)
    # levels are 1024² and 512²: the coarsest with a long side of at least 256 px
    assert sample.image.shape == (512, 512, 3) and sample.target.shape == (1, 512, 512)
    assert set(sample.target.ravel().tolist()) <= {0, 1, 2}
    with pytest.raises(UserError, match="no class 'stroma'"):
        slide_classes(record, ["stroma"])
    with pytest.raises(UserError, match="no label pyramid 'corrected'"):
        slide_classes(SlideRecord(slide, "corrected", 256), ["tumour"])
