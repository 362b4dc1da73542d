"""Speed of the ``fundus_lesions`` generator and of the IDRiD mask writer/reader.

Baselines, run in the same process:

* generation: decoding the base photograph (``skimage.data.retina()``, a 1411×1411 JPEG), the
  least any sample costs; reported per sample for the unmodified photograph (index 0) and for
  random variants (indices 1..N), and for a cache hit (``fundus_lesions`` after the first use);
* IDRiD masks: ``tifffile.imwrite`` / ``tifffile.imread`` of the same 4288×2848 bool mask as an
  8-bit TIFF (what a writer that does not pack bits would do).

Prints CPU seconds of this process (median of the repeats; the work is single-threaded, so this
is the wall time on an idle core and stays meaningful on a shared, busy machine) and ratios.

Run: ``.venv/bin/python benchmarks/bench_fundus_samples.py [--variants 6] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median CPU seconds of ``repeats`` calls of ``run``."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=6, help="random variants to time (indices 1..N)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import tifffile
    from skimage import data

    from napari_m2mrf.io.idrid_masks import read_idrid_mask, write_idrid_mask
    from sample_data.fundus_samples import fundus_lesions, generate_fundus_sample
    from sample_data.fundus_variants import base_fundus

    base_fundus()  # one-off per process: decode + vessel map
    decode = median_seconds(data.retina, args.repeats)
    canonical = median_seconds(lambda: generate_fundus_sample(0, 0), args.repeats)
    variants = [median_seconds(lambda i=i: generate_fundus_sample(i, 0), 1) for i in range(1, args.variants + 1)]
    print(f"decode retina.jpg (baseline)      {decode:7.3f} s")
    print(f"sample 0 (unmodified photograph)  {canonical:7.3f} s  = {canonical / decode:5.1f} x decode")
    print(
        f"variants 1..{args.variants} (median, max)     {statistics.median(variants):7.3f} s, {max(variants):.3f} s"
        f"  = {statistics.median(variants) / decode:5.1f} x decode"
    )

    with tempfile.TemporaryDirectory() as folder:
        os.environ["NAPARI_M2MRF_CACHE"] = folder
        fundus_lesions(0, 0)
        cache_hit = median_seconds(lambda: fundus_lesions(0, 0), args.repeats)
        print(f"cache hit (fundus_lesions)        {cache_hit:7.3f} s  = {cache_hit / canonical:5.2f} x generating")

        # The sample's exudates enlarged 3x to IDRiD's size (4288x2848, the field of view centred).
        enlarged = np.repeat(np.repeat(generate_fundus_sample(0, 0).masks["EX"], 3, 0), 3, 1)
        top = (enlarged.shape[0] - 2848) // 2
        mask = np.pad(enlarged[top : top + 2848], ((0, 0), (0, 4288 - enlarged.shape[1])))
        ours, plain = Path(folder) / "ours.tif", Path(folder) / "plain.tif"
        write_ours = median_seconds(lambda: write_idrid_mask(ours, mask), args.repeats)
        write_plain = median_seconds(lambda: tifffile.imwrite(plain, mask.view(np.uint8)), args.repeats)
        read_ours = median_seconds(lambda: read_idrid_mask(ours), args.repeats)
        read_plain = median_seconds(lambda: tifffile.imread(plain), args.repeats)
        size_ours, size_plain = ours.stat().st_size, plain.stat().st_size
    print(f"8-bit tifffile write (baseline)   {write_plain:7.3f} s")
    print(f"IDRiD mask write 4288x2848        {write_ours:7.3f} s  = {write_ours / write_plain:5.2f} x baseline")
    print(f"8-bit tifffile read (baseline)    {read_plain:7.3f} s")
    print(f"IDRiD mask read                   {read_ours:7.3f} s  = {read_ours / read_plain:5.2f} x baseline")
    print(f"IDRiD mask file size              {size_ours / 1e6:7.2f} MB = {size_ours / size_plain:5.3f} x 8-bit file")


if __name__ == "__main__":
    main()
