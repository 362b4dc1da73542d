"""``python -m benchmarks.gpu_check OUT_DIR [--budget-s S] [--tiny|--full] [--idrid DIR] [--keep-scratch]``."""

from .cli import main

raise SystemExit(main())
