"""What one check run does: full sizes on a GPU, tiny sizes that exercise every stage on a CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The repository root (stages run pytest and the trainer from it).
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """Sizes and inputs of one check run; image sizes are ``(H, W)`` in pixels."""

    tiny: bool
    device: str  # "cuda" or "cpu"
    inference_size: tuple[int, int]
    inference_rounds: int  # timed rounds, each running every model once
    inference_warmup: int  # untimed forwards per model before the rounds
    training_size: tuple[int, int]
    training_batch: int
    training_steps: int  # timed steps after two warm-up steps
    slide_side: int  # level-0 pixels per side of the synthetic slide
    slide_outputs: tuple[int | None, ...]  # deformed-image sides to time (None: the checkpoint's)
    fundus_max_iterations: int  # per cross-validation fold
    idrid: str | None = None  # IDRiD 'A. Segmentation' subset for the fundus stage (None: look for one)

    @classmethod
    def for_run(cls, tiny: bool, device: str, idrid: str | None = None) -> Settings:
        if tiny:
            return cls(True, device, (32, 48), 2, 1, (32, 48), 2, 2, 4096, (None,), 2, idrid)
        return cls(False, device, (960, 1440), 20, 3, (960, 1440), 4, 8, 65536, (None, 512), 3000, idrid)
