"""Throughput and peak memory of ``napari-m2mrf convert`` (and of generating the slide sample).

Every measured run is a fresh child process, so its peak RSS (``ru_maxrss``) is its own. Wall
time is reported with CPU time (user + system): the VM is shared, and CPU seconds stay meaningful
when other jobs compete for the two cores. Throughput is level-0 megabytes (uncompressed) per
wall second.

Baseline, run by this script on the same input: the in-memory conversion a simple script would
do (``tifffile.imread`` of the whole level 0, then ``zarr`` level arrays made by 2×2 averaging in
memory). Ratios are ``convert / baseline``.

Run: ``.venv/bin/python benchmarks/bench_convert.py [--size 16384] [--work DIR] [--generate-only]``
(``--size 32768`` converts the full-size sample; the baseline then needs about 5 GB of memory).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDRID_IMAGE = ROOT.parent / "shared" / "data" / "idrid_subset" / "1. Original Images" / "a. Training Set" / "IDRiD_01.jpg"


def child(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; its wall/CPU seconds and peak RSS (MiB)."""
    wrapper = (
        "import time, resource, json, sys\n"
        "start = time.perf_counter()\n"
        f"{code}\n"
        "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(json.dumps({'wall': time.perf_counter() - start, 'cpu': usage.ru_utime + usage.ru_stime, "
        "'rss_mib': usage.ru_maxrss / 1024}))\n"
    )
    result = subprocess.run([sys.executable, "-c", wrapper], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def generate(size: int, folder: Path) -> dict:
    return child(f"from sample_data.slide_sample import generate_slide\ngenerate_slide({str(folder)!r}, size={size})")


def convert(source: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    return child(f"from napari_m2mrf.cli import main\nassert main(['convert', {str(source)!r}, {str(out)!r}, '--quiet']) == 0")


def baseline(source: Path, out: Path) -> dict:
    """Whole level 0 in memory, then every level by 2×2 averaging in memory, written with zarr."""
    shutil.rmtree(out, ignore_errors=True)
    code = f"""
import numpy as np, tifffile, zarr
from PIL import Image
from napari_m2mrf.io.downsample import mean_2x2
source = {str(source)!r}
level = tifffile.imread(source) if source.endswith(('.tif', '.tiff')) else np.asarray(Image.open(source))
level = np.moveaxis(level, -1, 0)
root = zarr.open_group({str(out)!r}, mode='w')
k = 0
while True:
    root.create_array(str(k), data=level, chunks=(3, 512, 512))
    if max(level.shape[1:]) <= 512:
        break
    level = mean_2x2(level)
    k += 1
"""
    return child(code)


def row(name: str, megabytes: float, run: dict, base: dict | None) -> str:
    rate = megabytes / run["wall"]
    ratio = "1" if base is None else f"{rate / (megabytes / base['wall']):.2f}× / {run['rss_mib'] / base['rss_mib']:.2f}×"
    return f"| {name} | {run['wall']:.1f} | {run['cpu']:.1f} | {rate:.1f} | {run['rss_mib']:.0f} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="side of the synthetic slide (multiple of 512)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--generate-only", action="store_true", help="only time generating the synthetic slide")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        run_all(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run_all(args: argparse.Namespace, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores)")
    slide_dir = work / f"slide-{args.size}"
    if not (slide_dir / "slide.ome.tif").exists():
        made = generate(args.size, slide_dir)
        print(f"generate_slide({args.size}): wall {made['wall']:.1f} s, CPU {made['cpu']:.1f} s, peak RSS {made['rss_mib']:.0f} MiB")
    if args.generate_only:
        return
    megabytes = 3 * args.size**2 / 1e6
    print("| input → output | wall s | CPU s | MB/s | peak RSS MiB | vs baseline (MB/s / RSS) |")
    print("|---|---|---|---|---|---|")
    tiff = slide_dir / "slide.ome.tif"
    base = baseline(tiff, work / "baseline.zarr")
    print(row(f"baseline: in-memory, OME-TIFF {args.size}²", megabytes, base, None))
    print(row(f"convert OME-TIFF {args.size}² (JPEG tiles)", megabytes, convert(tiff, work / "from_tiff.zarr"), base))
    from_zarr = convert(slide_dir / "slide.ome.zarr", work / "from_zarr.zarr")
    print(row(f"convert OME-Zarr {args.size}² (zstd chunks)", megabytes, from_zarr, base))
    if IDRID_IMAGE.is_file():
        idrid_mb = 3 * 4288 * 2848 / 1e6
        jpeg_base = baseline(IDRID_IMAGE, work / "idrid_baseline.zarr")
        print(row("baseline: in-memory, IDRiD JPEG 4288×2848", idrid_mb, jpeg_base, None))
        print(row("convert IDRiD JPEG (+ ground truth labels)", idrid_mb, convert(IDRID_IMAGE, work / "idrid.zarr"), jpeg_base))


if __name__ == "__main__":
    main()
