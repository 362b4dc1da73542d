"""Import PyTorch and the model modules off the GUI thread, then finish building a widget.

Importing torch takes one to two seconds; done in a widget's constructor it would freeze the
viewer when the widget opens. Widgets build their controls at once, import in a superqt worker
thread (the same mechanism as their other background jobs), and fill in what needs torch (devices,
model lists) on the GUI thread when the import is done.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from qtpy.QtCore import QObject

LOADING = "loading PyTorch…"
STILL_LOADING = "PyTorch is still loading; try again in a moment"


def device_choices(loaded: bool) -> list[tuple[str, str]]:
    """The device box's (label, value) choices: "auto", then (once torch is loaded) the devices
    torch can use, each labelled with what it is (``auto`` with the device it picks here), so the
    user sees which device will run before pressing Run."""
    if not loaded:
        return [("auto", "auto")]
    from napari_m2mrf.inference.devices import available_devices, describe_device

    return [(f"auto: {describe_device('auto')}", "auto")] + [(describe_device(name), name) for name in available_devices()]


def import_all(modules: Sequence[str]) -> str:
    """Import ``modules``; "" when all are in, else the message to show the user."""
    try:
        for name in modules:
            importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is reported to the user, not raised
        return f"PyTorch or the models could not be loaded: {type(exc).__name__}: {exc}"
    return ""


def after_import(owner: QObject, modules: Sequence[str], callback: Callable[[str], None]) -> None:
    """Import ``modules`` and call ``callback("")`` on the GUI thread, or ``callback(message)`` when one
    fails to import. When all are imported already (another widget loaded them) the callback runs at
    once; otherwise they are imported in a worker thread, and the callback runs on the GUI thread
    unless ``owner`` was deleted meanwhile (the widget was closed). The worker starts on a later
    event-loop turn, after the widget is docked and after the warm-up (:mod:`.warm_up`): an import
    beside either holds the GIL the GUI thread needs (docking took 0.7–1.9 s instead of 0.2 s)."""
    from qtpy.QtCore import QTimer
    from superqt.utils import create_worker

    from napari_m2mrf.widgets import warm_up

    if all(name in sys.modules for name in modules):
        callback(import_all(modules))
        return
    alive = [True]
    owner.destroyed.connect(lambda *_: alive.clear())

    def begin() -> None:
        create_worker(import_all, modules, _connect={"returned": lambda message: alive and callback(message)})

    QTimer.singleShot(0, lambda: warm_up.when_done(begin))
