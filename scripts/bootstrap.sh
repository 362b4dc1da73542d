#!/usr/bin/env bash
# Installs everything napari-m2mrf needs on a fresh Debian machine, and nothing when it is all there.
#   - system libraries for a virtual display (Xvfb, Mesa OpenGL, Qt's xcb libraries), via apt as root
#   - a virtual environment in .venv holding exactly requirements.lock (every package at a pinned version,
#     hash-checked; torch is the 2.13.0 CPU build) and the package itself, editable, with no other dependency
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run on its own.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

SYSTEM_PACKAGES=(xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libxkbcommon-x11-0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
  libxcb-shape0 libxcb-cursor0 libxcb-xkb1 libdbus-1-3 libfontconfig1 libglib2.0-0)

missing_system_packages() {
  local pkg
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}

install_system_packages() {
  command -v dpkg-query >/dev/null 2>&1 || return 0   # not Debian: the display check below says what is missing
  local missing
  missing=$(missing_system_packages)
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "napari-m2mrf setup: installing system packages: $missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  elif [ -z "${DISPLAY:-}" ]; then
    echo "napari-m2mrf setup: no display and missing system packages; run as root or install: sudo apt-get install $missing" >&2
    exit 2
  fi
}

setup_stamp() {
  cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$ROOT/requirements.lock" "$ROOT/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1
}

# pip, without the warnings this machine's pip.conf gives for index folders that do not exist here.
pip_quiet() {
  "$@" 2> >(grep -v "^WARNING: Location 'file:///" >&2)
}

install_python_packages() {
  local stamp_file="$VENV/.setup-stamp"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$(setup_stamp)" ]; then
    return 0
  fi
  echo "napari-m2mrf setup: installing Python packages into $VENV (first run takes a few minutes)" >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  local pip=(pip_quiet "$VENV/bin/python" -m pip --disable-pip-version-check -q)
  # Exactly the lock: --require-hashes refuses any file whose hash differs, --no-deps anything unlisted.
  "${pip[@]}" install --require-hashes --no-deps -r "$ROOT/requirements.lock"
  # The package itself, built with the locked setuptools; its dependencies are all in the lock.
  "${pip[@]}" install --no-deps --no-build-isolation -e "$ROOT"
  "$VENV/bin/python" -m pip check
  setup_stamp > "$stamp_file"
}

install_system_packages
install_python_packages
