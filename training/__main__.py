"""``python -m training CONFIG.yaml`` (also under ``torchrun --nproc_per_node N -m training``)."""

from training.cli import main

raise SystemExit(main())
