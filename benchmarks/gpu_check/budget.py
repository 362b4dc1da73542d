"""The time budget: each stage's share of it, and the deadline a stage gets when it starts.

Times are epoch seconds (``time.time()``) so that stage child processes share one clock.
"""

from __future__ import annotations

import time

DEFAULT_BUDGET_S = 480.0
GRACE_S = 20.0  # a stage child may run this long past its deadline before it is killed
# (stage, seconds allotted out of the default budget, least seconds it needs to be worth starting)
STAGES: list[tuple[str, float, float]] = [
    ("cuda_tests", 70, 20),
    ("inference", 70, 20),
    ("training", 50, 15),
    ("slide", 110, 30),
    ("fundus", 180, 40),
]
TINY_RESERVE_SCALE = 0.25  # tiny stages need a quarter of the least seconds kept for them
MIN_STAGE_S = 5.0  # a stage with less time than this before its deadline is skipped


def stage_deadline(chosen: list[tuple[str, float, float]], index: int, budget_s: float, end: float,
                   tiny: bool) -> float:
    """Deadline of ``chosen[index]`` starting now: its share of ``budget_s``, but leaving the later
    stages their least seconds before ``end``; the fundus stage (last) runs until 5 s before ``end``."""
    name, allotted, _ = chosen[index]
    if name == "fundus":
        return end - 5
    scale = TINY_RESERVE_SCALE if tiny else 1.0
    reserve = sum(least for _, _, least in chosen[index + 1 :]) * scale
    return min(time.time() + allotted * budget_s / DEFAULT_BUDGET_S, end - reserve)
