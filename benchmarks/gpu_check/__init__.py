"""One prepared GPU check: CUDA tests, W48 inference and training speed, the slide model, a fundus run.

Run through ``bash scripts/gpu_check.sh OUT_DIR [--budget-s 480] [--tiny]`` (which sets up the
Python environment on the device machine first) or directly, from the repository root, as
``python -m benchmarks.gpu_check OUT_DIR [--budget-s S] [--tiny|--full] [--idrid DIR]``.

Stages, one module each (a crash, an error or a hang of one stage is recorded and the next stage
still runs):

:mod:`.cuda_tests`
    ``pytest -m cuda tests/test_cuda.py`` under ``scripts/gpu_pytest.ini`` with plugin autoloading off.
:mod:`.inference`
    Images/s of HRNetV2-W48 and M2MRF-HRNetV2-W48 A–D at ``1×3×960×1440``, float32 and autocast.
:mod:`.training_speed`
    Iterations/s and peak memory of M2MRF-HRNetV2-W48-A training steps at ``4×3×960×1440``.
:mod:`.slide`
    ``run_slide_segmentation`` with the bundled slide model on a 65536² procedural slide
    (:mod:`.synthetic_slide`).
:mod:`.fundus`
    The bundled fundus recipe trained with ``python -m training`` for the time left
    (:mod:`.fundus_data` builds its data, :mod:`.trainer_process` runs and stops the trainer).

:mod:`.runner` gives each stage its deadline out of the budget and runs it in a child process (its
own CUDA context, so peak-memory figures are its own; a tiny run without CUDA runs the stages in
one process); :mod:`.records` writes the per-stage JSON and the summary; :mod:`.cli` is the command
line. Everything is written under ``OUT_DIR``: one ``<stage>.json`` per stage, the summary
``gpu_check.json`` (device, versions, every figure, each stage's wall time and error), the log
``gpu_check.log`` and the fundus run's ``fundus/`` (checkpoint, config, README); scratch files go
to ``OUT_DIR/scratch`` and are deleted at the end (kept with ``--keep-scratch``). ``--tiny``
(chosen automatically without CUDA) runs every stage with tiny sizes on the CPU so the check is
exercised by the normal test suite (``tests/test_gpu_check.py``).

Stage modules import the project (``napari_m2mrf``, ``training``) inside their stage function, so a
module missing on the device machine fails that stage only.
"""
