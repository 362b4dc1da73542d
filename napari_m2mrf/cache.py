"""The per-user cache folder (generated sample data, workspaces, the register of trained models), created on first use."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from napari_m2mrf.errors import UserError

CACHE_ENV = "NAPARI_M2MRF_CACHE"


def cache_dir(sub: str = "") -> Path:
    """The writable cache folder (``$NAPARI_M2MRF_CACHE`` or the platform's user cache), created if needed.

    Raises ``UserError`` with what to do when the folder cannot be created or written.
    """
    configured = os.environ.get(CACHE_ENV)
    if configured:
        base = Path(configured).expanduser()
    else:
        import platformdirs

        base = Path(platformdirs.user_cache_dir("napari-m2mrf"))
    folder = base / sub if sub else base
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(
            f"cache folder {folder} is not writable ({exc.strerror or exc}); "
            f"set {CACHE_ENV} to a writable folder"
        ) from None
    return folder
