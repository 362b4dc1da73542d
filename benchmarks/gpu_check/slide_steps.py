"""Seconds per step of ``run_slide_segmentation``, told apart by the first words of its progress messages.

Used by the GPU check's slide stage (:mod:`.slide`) and by ``benchmarks/bench_slide_inference.py``.
"""

from __future__ import annotations

import time

# progress message prefix -> step name in the figures
SLIDE_STEPS = {
    "loading": "load model",
    "deformation map": "density + grid",
    "sampling the slide": "pyramid sampling",
    "segmenting": "segmentation",
    "labels ready (lazy)": "lazy result handed out",
    "probability maps": "probability maps (every level)",
    "reverse mapping": "reverse fill of level 0",
    "building coarser levels": "coarser label levels (reverse fill)",
    "writing sampling points": "points, deformation, provenance",
    "done": "end",
}


class StepClock:
    """A progress callback ``(done, total, message)`` for one run that notes when each step starts."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []  # (step name, time.perf_counter() in s) at its first message

    def __call__(self, done: int, total: int, message: str) -> None:
        step = next((name for prefix, name in SLIDE_STEPS.items() if message.startswith(prefix)), None)
        if step and (not self.marks or self.marks[-1][0] != step):
            self.marks.append((step, time.perf_counter()))

    def seconds(self, digits: int) -> dict[str, float]:
        """Seconds of each step seen, rounded to ``digits``: to the next step's start (the last one to
        the ``done`` message, or to now when there was none)."""
        marks = [*self.marks, ("end", time.perf_counter())]
        return {name: round(marks[i + 1][1] - t, digits) for i, (name, t) in enumerate(marks[:-1]) if name != "end"}
