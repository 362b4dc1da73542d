#!/usr/bin/env bash
# The prepared GPU check: bash scripts/gpu_check.sh OUT_DIR [--budget-s 480] [--tiny] [--idrid DIR] [--keep-scratch]
#
# Runs python -m benchmarks.gpu_check (CUDA tests, W48 inference and training speed, the slide model on a
# 64k² synthetic slide, the fundus recipe for the time left) and writes everything under OUT_DIR
# (summary: OUT_DIR/gpu_check.json). Without CUDA it runs tiny sizes on the CPU.
#
# Python: $PYTHON if set, else the project's .venv, else python3. When the modules the check needs
# beyond the device machine's image (zarr, numcodecs, google-crc32c, donfig, psygnal, pydantic) are not
# importable and the wheelhouse built by scripts/gpu_wheelhouse.sh (.cache/gpu-wheelhouse) is
# here, they are installed offline into a venv under OUT_DIR/scratch that sees the system's
# packages (so the machine's CUDA torch is used). The project itself runs from this source tree.
set -euo pipefail
STARTED="$(date +%s.%N)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: bash scripts/gpu_check.sh OUT_DIR [--budget-s S] [--tiny] [--idrid DIR] [--keep-scratch]" >&2
    exit 2
fi
OUT="$1"; shift
mkdir -p "$OUT/scratch"
OUT="$(cd "$OUT" && pwd)"
WHEELHOUSE="${GPU_WHEELHOUSE:-$ROOT/.cache/gpu-wheelhouse}"
NEEDED="zarr numcodecs google_crc32c donfig psygnal pydantic pydantic_core annotated_types typing_inspection"

if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY="$ROOT/.venv/bin/python"
else
    PY="$(command -v python3)"
fi
# Bytecode, temporary files and caches stay under OUT_DIR.
export PYTHONPYCACHEPREFIX="$OUT/scratch/pycache" TMPDIR="$OUT/scratch/tmp" PIP_CACHE_DIR="$OUT/scratch/pip-cache"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
mkdir -p "$TMPDIR"

missing() { "$1" - "$NEEDED" <<'PY'
import importlib.util, sys
print(" ".join(n for n in sys.argv[1].split() if importlib.util.find_spec(n) is None))
PY
}
LACKING="$(missing "$PY")"
if [[ -n "$LACKING" ]]; then
    if compgen -G "$WHEELHOUSE/*.whl" >/dev/null; then
        echo "gpu_check.sh: $PY lacks: $LACKING; installing the wheelhouse into $OUT/scratch/venv" >&2
        if "$PY" -m venv --system-site-packages "$OUT/scratch/venv"; then
            # The device's python3 is itself a venv (/opt/torch/.venv): --system-site-packages then sees the
            # base interpreter's packages, not torch's. A .pth adds $PY's own site-packages after the venv's.
            PURELIB="$("$OUT/scratch/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
            "$PY" -c 'import site; print("\n".join(site.getsitepackages()))' > "$PURELIB/_gpu_check_parent.pth"
            "$OUT/scratch/venv/bin/python" -m pip install -q --no-index --no-deps --no-compile \
                --find-links "$WHEELHOUSE" "$WHEELHOUSE"/*.whl
            PY="$OUT/scratch/venv/bin/python"
        else  # no venv module (or no ensurepip): a target folder on PYTHONPATH instead
            echo "gpu_check.sh: no venv; installing into $OUT/scratch/site on PYTHONPATH" >&2
            "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$OUT/scratch/site" "$WHEELHOUSE"/*.whl
            export PYTHONPATH="$OUT/scratch/site${PYTHONPATH:+:$PYTHONPATH}"
        fi
        LACKING="$(missing "$PY")"
        [[ -z "$LACKING" ]] || echo "gpu_check.sh: still missing after the install: $LACKING" >&2
    else
        echo "gpu_check.sh: $PY lacks $LACKING and there is no wheelhouse at $WHEELHOUSE" \
             "(bash scripts/gpu_wheelhouse.sh builds it); stages that need them will report errors" >&2
    fi
fi
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m benchmarks.gpu_check "$OUT" --started "$STARTED" "$@"
