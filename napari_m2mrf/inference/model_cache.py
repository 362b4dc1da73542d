"""Models loaded once per process: the Segment widget loads the chosen model while the user looks, and
the run that follows takes it from here instead of reading the checkpoint again.

A model is identified by its checkpoint path and weights' sha256 (a retrained file at the same path is a
new entry). At most :data:`MAX_MODELS` models are kept (the least recently used goes first), so a long
session that tries many models does not grow. Loading the same model from two threads at once loads it
once: the second caller waits for the first. Untrained registry architectures are not cached (building
one is cheap and each run gets fresh weights). After a load, the objects alive are frozen out of the cyclic
garbage collector (``gc.freeze``): a model held for the session would otherwise lengthen every full
collection, which runs on whichever thread allocates at that moment, the GUI thread included (measured:
0.2-0.3 s stalls during a slide run with a fundus model loaded). Reference counting still frees them.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from napari_m2mrf.jobs import CancelToken

if TYPE_CHECKING:
    from torch import nn

    from napari_m2mrf.catalog import ModelRef

logger = logging.getLogger(__name__)

MAX_MODELS = 2

_lock = threading.Lock()
_models: OrderedDict[tuple[str, str], nn.Module] = OrderedDict()
_loading: dict[tuple[str, str], threading.Lock] = {}


def _key(ref: ModelRef) -> tuple[str, str] | None:
    if ref.path is None or ref.weights_sha256 is None:
        return None
    return str(ref.path), ref.weights_sha256


def cached_model(ref: ModelRef) -> nn.Module | None:
    """The model of ``ref`` when it is loaded already, else None (nothing is loaded)."""
    key = _key(ref)
    with _lock:
        if key is None or key not in _models:
            return None
        _models.move_to_end(key)
        return _models[key]


def load_model(ref: ModelRef, cancel: CancelToken | None = None) -> nn.Module:
    """The model of ``ref`` in eval mode on the CPU: from the cache, or loaded (once) and cached.

    ``cancel`` is checked before loading starts (a load itself takes a second or two and is not split).
    """
    key = _key(ref)
    if key is None:
        return ref.load()
    with _lock:
        per_model = _loading.setdefault(key, threading.Lock())
    with per_model:
        found = cached_model(ref)
        if found is not None:
            return found
        if cancel is not None:
            cancel.check()
        start = time.perf_counter()
        model = ref.load()
        # the model's thousands of long-lived objects leave the cyclic collector's watch: otherwise every
        # full collection walks them, on whichever thread it happens to run (the GUI's: 0.2-0.3 s stalls)
        gc.freeze()
        with _lock:
            _models[key] = model
            _models.move_to_end(key)
            while len(_models) > MAX_MODELS:
                dropped, _ = _models.popitem(last=False)
                _loading.pop(dropped, None)
        logger.info("model %s loaded in %.2f s (kept for the next runs)", ref.name, time.perf_counter() - start)
        return model


def forget_models() -> None:
    """Drop every cached model (tests; freeing memory)."""
    with _lock:
        _models.clear()
        _loading.clear()
