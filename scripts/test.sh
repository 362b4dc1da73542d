#!/usr/bin/env bash
# Sets up what is missing, then runs the whole test suite (GUI tests on a virtual display).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
# Tests start several torch processes at once (dask workers, torchrun, the trainer behind the Train
# widget); one OpenMP thread each keeps a 2-core machine from thrashing.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
