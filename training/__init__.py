"""The bundled trainer for napari-m2mrf models (no Qt, no napari).

Run it as ``python -m training CONFIG.yaml``, ``napari-m2mrf train CONFIG.yaml`` or, on several
processes, ``torchrun --nproc_per_node N -m training CONFIG.yaml``. A run is described by a
:class:`training.config.TrainingConfig` (YAML/JSON) and reports its progress as events
(:mod:`training.events`) that the command line prints as JSON lines and the training widget plots.

Importing this package imports neither torch, Qt nor napari; the submodules that need torch import
it themselves.
"""
