#!/usr/bin/env bash
# Builds, here, what the GPU check (scripts/gpu_check.sh) needs on the device machine beyond its image
# (Python 3.12, CUDA torch, numpy, scipy, scikit-image, tifffile, safetensors, pyyaml, pillow,
# pytest, packaging, typing-extensions): cp312 manylinux x86_64 wheels in .cache/gpu-wheelhouse/
# (git-ignored), the same releases as requirements.lock. Carry that folder to the device
# (run's carry: [".cache/gpu-wheelhouse"]). With ../shared/data/idrid_subset present, a copy goes to
# .cache/gpu-wheelhouse/data/idrid_subset so the fundus stage cross-validates on real IDRiD images
# there; with ../shared/data/idrid_extra present, its photographs fitted into 960×1440 with their masks
# (training.recipes.idrid_extra --fit, about 7 MB instead of 33 MB) go to data/idrid_extra_fitted so
# every fold trains on them too (--no-data leaves both out).
#
# Why each wheel: zarr (+ numcodecs, google-crc32c, donfig) — the slide stage writes a real zarr
# workspace; psygnal — napari_m2mrf.catalog (model lookup) imports it; pydantic
# (+ pydantic-core, annotated-types, typing-inspection) — training.config validates with it;
# typing-extensions — the lock's release, as pydantic-core needs a recent one.
# Not needed: the project itself (runs from the carried source tree), dask, napari/Qt, imagecodecs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/.cache/gpu-wheelhouse"
DATA=1
[[ "${1:-}" == "--no-data" ]] && DATA=0
PIP="${PIP:-python3 -m pip}"
PACKAGES=(zarr numcodecs google-crc32c donfig psygnal pydantic pydantic-core annotated-types typing-inspection typing-extensions)
pins=()
for name in "${PACKAGES[@]}"; do
    version="$(grep -iE "^${name}==" "$ROOT/requirements.lock" | head -1 | sed -E 's/^[^=]+==([^ ;\\]+).*/\1/')"
    if [[ -z "$version" ]]; then echo "gpu_wheelhouse.sh: $name is not pinned in requirements.lock" >&2; exit 1; fi
    pins+=("$name==$version")
done
rm -rf "$OUT"
mkdir -p "$OUT"
$PIP download --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$OUT" "${pins[@]}"
if [[ $DATA == 1 && -d "$ROOT/../shared/data/idrid_subset" ]]; then
    mkdir -p "$OUT/data"
    cp -rL "$ROOT/../shared/data/idrid_subset" "$OUT/data/"
fi
if [[ $DATA == 1 && -d "$ROOT/../shared/data/idrid_extra" ]]; then
    (cd "$ROOT" && "$ROOT/.venv/bin/python" -m training.recipes.idrid_extra "$OUT/data/idrid_extra_fitted" \
        --extra "$ROOT/../shared/data/idrid_extra" --fit 960 1440)
fi
echo "wheelhouse $OUT:"
ls -l "$OUT"
du -sh "$OUT"
