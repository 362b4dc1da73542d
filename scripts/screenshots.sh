#!/usr/bin/env bash
# Refreshes the README's screenshots of the plugin's widgets (docs/screenshots/*.png, or the folder given):
# napari with the fundus sample, the bundled model run, each widget docked. Headless machines get a
# virtual display (Xvfb through PyVirtualDisplay). Needs the environment of scripts/bootstrap.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(realpath -m "${1:-$ROOT/docs/screenshots}")"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m benchmarks.screenshots "$OUT"
