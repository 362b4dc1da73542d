"""``napari-m2mrf convert-checkpoint OFFICIAL.pth OUT --arch NAME [--variant V]``.

Turns an official M2MRF / mmseg HRNetV2 checkpoint into a napari-m2mrf ``.safetensors`` checkpoint
(weights + metadata: classes EX, HE, SE, MA, the official normalisation and input size of the
dataset it was trained on, provenance). The ``.pth`` is read with ``torch.load(weights_only=True)``.
Without ``--variant`` an M2MRF checkpoint's variant is found from its key names.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert-checkpoint",
        help="convert an official M2MRF/mmseg .pth checkpoint to a napari-m2mrf .safetensors file",
        description="Convert an official M2MRF-HRNetV2 (or vanilla HRNetV2) mmseg checkpoint into a "
        "napari-m2mrf checkpoint. Every official key must map onto the model; otherwise the "
        "missing, unexpected and mis-shaped keys are listed and the exit code is 2.",
    )
    parser.add_argument("official", type=Path, metavar="OFFICIAL.pth", help="official mmseg checkpoint")
    parser.add_argument("out", type=Path, metavar="OUT", help="output file (.safetensors is appended if absent)")
    parser.add_argument("--arch", required=True, help="registry name, e.g. m2mrf_hrnetv2_w48 or hrnetv2_w48")
    parser.add_argument("--variant", choices=["A", "B", "C", "D"], help="M2MRF variant (default: found from the keys)")
    parser.add_argument(
        "--dataset",
        choices=["idrid", "ddr"],
        help="dataset the model was trained on: sets normalisation and input size "
        "(default: read from the checkpoint's config, else idrid)",
    )
    parser.set_defaults(func=run)
    return parser


def _dataset_from_meta(meta: dict) -> str | None:
    config = str(meta.get("config", "")).lower()
    found = {name for name in ("idrid", "ddr") if re.search(rf"\b{name}", config)}
    return found.pop() if len(found) == 1 else None


def run(args: argparse.Namespace) -> int:
    from napari_m2mrf.errors import UserError
    from napari_m2mrf.models.checkpoints import file_sha256, fundus_metadata, save_checkpoint
    from napari_m2mrf.models.official import (
        fitting_variants,
        load_official_weights,
        official_num_classes,
        read_official_file,
    )
    from napari_m2mrf.models.registry import build_uninitialised, model_entry

    entry = model_entry(args.arch)
    if args.variant and not entry.m2mrf:
        raise UserError(f"--variant applies to M2MRF models only, not {args.arch}")
    state, meta = read_official_file(args.official)
    num_classes = official_num_classes(state, args.official)
    cfg: dict = {"num_classes": num_classes}
    if entry.m2mrf:
        variant = args.variant
        if variant is None:
            fitting = fitting_variants(state, args.arch, num_classes)
            if len(fitting) != 1:
                raise UserError(
                    f"{args.official}: cannot tell the M2MRF variant of {args.arch} from the keys "
                    f"(fits: {', '.join(fitting) or 'none'}); give --variant"
                )
            variant = fitting[0]
        cfg["variant"] = variant
    model = build_uninitialised(args.arch, **cfg)
    mapped = load_official_weights(model, args.official)

    dataset = args.dataset or _dataset_from_meta(meta) or "idrid"
    provenance = {
        "source": "official M2MRF-Lesion-Segmentation checkpoint (mmseg)",
        "file": args.official.name,
        "file_sha256": file_sha256(args.official),
        "official_meta": {k: v for k, v in meta.items() if k != "config" and isinstance(v, (str, int, float))},
    }
    out = args.out if args.out.suffix == ".safetensors" else args.out.with_name(args.out.name + ".safetensors")
    written = save_checkpoint(out, model, fundus_metadata(dataset, provenance))
    label = args.arch + (f" variant {cfg['variant']}" if "variant" in cfg else "")
    print(f"mapped {mapped} keys from {args.official} into {label} ({num_classes} classes, {dataset} normalisation)")
    print(f"wrote {out} (weights sha256 {written['weights_sha256'][:16]}…)")
    return 0
