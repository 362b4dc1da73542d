"""Turn a training run into a bundled checkpoint: the best model, float16 weights, provenance.

``python -m sample_data.bundle_checkpoint RUN_DIR NAME`` reads ``RUN_DIR/best.safetensors`` (or
``last.safetensors``) and the run's ``events.jsonl``, and writes ``sample_data/checkpoints/NAME.safetensors``
with the run's config, iterations and last validation metrics in its provenance.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from napari_m2mrf.errors import UserError

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def bundle(run_dir: Path, name: str) -> Path:
    """Write the bundled checkpoint ``NAME.safetensors`` from ``run_dir``; returns its path."""
    import torch
    import yaml

    from napari_m2mrf.models import load_checkpoint, save_checkpoint

    source = next((run_dir / f for f in ("best.safetensors", "last.safetensors") if (run_dir / f).is_file()), None)
    if source is None:
        raise UserError(f"{run_dir}: no best.safetensors or last.safetensors")
    model, meta = load_checkpoint(source)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    evaluations = [e for e in events if e.get("event") == "evaluation"]
    steps = [e["iteration"] for e in events if e.get("event") == "iteration"]
    provenance = {
        **meta.get("provenance", {}),
        "trained_iterations": max(steps) if steps else 0,
        "selected_checkpoint": source.name,
        "validation": (max(evaluations, key=lambda e: e["score"]) if source.name.startswith("best") else evaluations[-1])
        if evaluations else None,
        "config": yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else None,
    }
    kept = {k: v for k, v in meta.items() if k in ("classes", "normalization", "input_size")}
    target = CHECKPOINTS / f"{name}.safetensors"
    save_checkpoint(target, model, {**kept, "provenance": provenance}, dtype=torch.float16)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample_data.bundle_checkpoint", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    args = parser.parse_args(argv)
    print(bundle(args.run_dir, args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
