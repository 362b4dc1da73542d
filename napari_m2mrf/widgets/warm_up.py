"""Import and build, off the GUI thread, what napari and the widgets would otherwise make on it on first use.

Measured on the 2-core VM (Mesa llvmpipe), each of these cost the GUI thread the first time, inside a
layer's creation or a widget's docking (BENCHMARKS.md, "First results"):

* pint's application unit registry: napari's first layer reads ``registry.pixel``, which parses pint's
  definitions file (0.2–0.3 s of CPU);
* pandas: napari's first Labels or Points layer builds its features table (0.4–0.6 s, an import);
* scipy.ndimage: napari's Labels thumbnails and the Correct widget's component tools (0.3 s, an import).

:func:`start` (called by every plugin widget; the first call counts) runs :func:`prepare` in a worker
thread from the next event-loop turn on (never beside the docking that called it), and
:func:`when_done` runs a callback on the GUI thread once it is over, so PyTorch's import starts after it
instead of beside it (two imports at once on two cores starve the GUI thread of the GIL). The unit
registry is built aside in the worker and made napari's on the GUI thread, only if nothing has
used the lazy one meanwhile (installing it is then one assignment; building the lazy one from a thread
while the GUI thread reads it would race).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

MODULES = ("pandas", "scipy.ndimage", "napari_m2mrf.label_tools")

_state: dict[str, Any] = {"started": False, "done": False, "waiting": []}


def _pint() -> Any | None:
    """pint, napari's units library (napari's dependency, not this package's: named, like pandas, by string),
    or None where this napari does without it."""
    try:
        return importlib.import_module("pint")
    except ImportError:
        return None


def _lazy(pint: Any) -> bool:
    """Whether pint's application registry is still the lazy one nothing has used."""
    return type(pint.get_application_registry().get()).__name__ == "LazyRegistry"


def prepare() -> Any:
    """In a worker: import :data:`MODULES`; a fully built pint registry when napari's is still lazy, else None."""
    start = time.perf_counter()
    for name in MODULES:
        importlib.import_module(name)
    pint, registry = _pint(), None
    if pint is not None and _lazy(pint):
        registry = pint.UnitRegistry(on_redefinition="raise")  # what the lazy one becomes on first use
    logger.info("warmed up %s%s off the GUI thread in %.2f s", ", ".join(MODULES),
                " and pint's unit registry" if registry is not None else "", time.perf_counter() - start)
    return registry


def install(registry: Any) -> None:
    """On the GUI thread: make ``registry`` pint's application registry unless the lazy one was used since."""
    pint = _pint()
    if registry is not None and _lazy(pint):
        pint.set_application_registry(registry)


def start() -> None:
    """Warm up in a worker thread from the next event-loop turn on (once per process)."""
    from qtpy.QtCore import QTimer

    if _state["started"]:
        return
    _state["started"] = True
    QTimer.singleShot(0, _start_worker)


def _start_worker() -> None:
    from superqt.utils import create_worker

    create_worker(prepare, _connect={"returned": install, "errored": _failed, "finished": _finished})


def _failed(exc: Exception) -> None:
    logger.warning("warming up off the GUI thread failed (napari makes it on first use): %s", exc)


def _finished() -> None:
    _state["done"] = True
    waiting, _state["waiting"] = _state["waiting"], []
    for callback in waiting:
        callback()


def when_done(callback: Callable[[], None]) -> None:
    """``callback()`` on the GUI thread once the warm-up is over: at once when it is, or when none was started."""
    if _state["done"] or not _state["started"]:
        callback()
    else:
        _state["waiting"].append(callback)
