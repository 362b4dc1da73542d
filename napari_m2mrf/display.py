"""A display for Qt: the user's own, or a virtual X server (Xvfb) started on demand.

napari renders with OpenGL; Qt's ``offscreen`` platform has no OpenGL context for vispy, so a
headless run needs an X server. ``display_available`` starts Xvfb (software OpenGL through Mesa)
when ``$DISPLAY`` is unset and stops it again on exit.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from napari_m2mrf.errors import UserError

XVFB_SCREEN = "1920x1200x24"
XVFB_START_TIMEOUT_S = 20.0


def _read_display_number(read_fd: int, proc: subprocess.Popen) -> str:
    """Read the display number Xvfb writes to ``-displayfd`` (ends with a newline)."""
    number = b""
    while not number.endswith(b"\n"):
        ready, _, _ = select.select([read_fd], [], [], XVFB_START_TIMEOUT_S)
        chunk = os.read(read_fd, 16) if ready else b""
        if not chunk:
            proc.kill()
            raise UserError(f"Xvfb did not start within {XVFB_START_TIMEOUT_S:.0f} s (exit code {proc.poll()})")
        number += chunk
    return number.decode().strip()


def _die_with_parent() -> None:
    """In the Xvfb child: ask Linux to end it when this process ends (PR_SET_PDEATHSIG)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _qt_connected() -> bool:
    """Whether a Qt application (and so an X connection) exists in this process."""
    widgets = sys.modules.get("qtpy.QtWidgets")
    return widgets is not None and widgets.QApplication.instance() is not None


@contextmanager
def display_available() -> Iterator[str]:
    """Yield the X display to use (``$DISPLAY``), starting a private Xvfb if there is none.

    Raises ``UserError`` saying what to install when there is no display and no Xvfb. Qt keeps its X
    connection until the process ends, so once Qt has connected the server is left to end with this
    process instead of being stopped under Qt's feet.
    """
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        yield os.environ.get("DISPLAY", os.environ.get("WAYLAND_DISPLAY", ""))
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise UserError(
            "no display and no Xvfb: install a virtual display (as root: apt-get install xvfb libgl1-mesa-dri) "
            "or run with a display"
        )
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", XVFB_SCREEN, "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    os.close(write_fd)
    try:
        display = f":{_read_display_number(read_fd, proc)}"
    finally:
        os.close(read_fd)
    os.environ["DISPLAY"] = display
    try:
        yield display
    finally:
        if not _qt_connected():
            del os.environ["DISPLAY"]
            proc.terminate()
            proc.wait(timeout=5)
