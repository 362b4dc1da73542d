#!/usr/bin/env bash
# Sets up what is missing, then runs the demo: napari with the plugin, sample data and the bundled models.
# With no display it writes demo.png and a summary instead of opening a window.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
if [ -z "${DISPLAY:-}" ] && [ "$#" -eq 0 ]; then
  set -- --screenshot "$ROOT/demo.png"
fi
exec "$ROOT/.venv/bin/napari-m2mrf" demo "$@"
