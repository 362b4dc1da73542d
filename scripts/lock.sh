#!/usr/bin/env bash
# Regenerates requirements.lock: every package of the test and demo environment (the package with its
# qt, test and distributed extras) at an exact version with sha256 hashes, for CPython 3.11 (resolved
# for 3.11.7, the Python of this project's machines) on x86-64 Linux.
# Run it after changing a dependency in setup.cfg; commit setup.cfg and requirements.lock together.
#   bash scripts/lock.sh              re-resolve, keeping the locked versions where they still fit
#   bash scripts/lock.sh --upgrade    re-resolve every package to its newest allowed release
# The resolver is uv's `pip compile` (pinned below): fast, hashes every file, reads setup.cfg through
# the build backend, and writes a plain pip requirements file that bootstrap.sh installs with pip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.cache/lock-tools"
UV_VERSION=0.13.9
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x "$TOOLS/bin/uv" ] || [ "$("$TOOLS/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q "uv==$UV_VERSION"
fi
# torch is the CPU build (local version +cpu), which pip finds in /opt/wheels on this project's machines;
# pinning the local version keeps the resolver from ever choosing a CUDA build and its nvidia-* packages.
cd "$ROOT"
"$TOOLS/bin/uv" pip compile pyproject.toml \
  --extra qt --extra test --extra distributed \
  --python-version 3.11.7 --python-platform x86_64-manylinux_2_28 \
  --find-links /opt/wheels --constraint scripts/torch-cpu.txt \
  --generate-hashes --no-emit-find-links --custom-compile-command "bash scripts/lock.sh" \
  --output-file requirements.lock "$@"
if grep -qiE '^(nvidia-|triton==)' requirements.lock; then
  echo "lock.sh: the lock holds CUDA packages; torch must stay the CPU build" >&2
  exit 1
fi
