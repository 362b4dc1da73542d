"""``napari-m2mrf predict`` on slides: a slide model writes one workspace per slide (as the GUI run
does), a serial and a 2-worker dask run write the same bytes, a model that does not fit an input and a
broken slide fail alone (exit code 2), and the write gate holds (lock, ``--overwrite``, corrections kept)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from slide_helpers import save_slide_model

from napari_m2mrf.catalog import resolve
from napari_m2mrf.cli import main
from napari_m2mrf.io.output_gate import lock_path_for
from napari_m2mrf.io.workspace import Workspace
from napari_m2mrf.models import build_model, fundus_metadata, save_checkpoint
from sample_data.slide_sample import generate_slide

SIZE = 1024  # px per side of the generated slides (3 levels): small, so the dask test stays short


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small generated slides (an OME-TIFF and an OME-Zarr, different seeds), a slide model, a fundus
    model, a photograph and a truncated slide."""
    root = tmp_path_factory.mktemp("slides")
    first = generate_slide(root / "a", size=SIZE, seed=1)
    second = generate_slide(root / "b", size=SIZE, seed=2)
    fundus = root / "fundus.safetensors"
    meta = {**fundus_metadata("idrid", {"purpose": "test"}), "input_size": [128, 128]}
    save_checkpoint(fundus, build_model("hrnetv2_w18s", num_classes=4), meta)
    photograph = root / "eye.png"
    Image.fromarray((np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)).save(photograph)
    payload = first.ome_tiff.read_bytes()
    broken = root / "broken.svs"
    broken.write_bytes(payload[: len(payload) // 3])
    return {
        "tiff": first.ome_tiff, "zarr": second.ome_zarr, "slide_model": save_slide_model(root / "slide.safetensors"),
        "fundus_model": fundus, "photograph": photograph, "broken": broken,
    }


def _predict(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict], list[str]]:
    """``main(["predict", *args, "--json"])`` in this process: exit code, JSON lines, error lines."""
    code = main(["predict", *args, "--json"])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    errors = [line for line in captured.err.splitlines() if line.startswith("napari-m2mrf: error:")]
    return code, lines, errors


def _arrays(workspace_path: Path) -> dict[str, np.ndarray]:
    """Every level of the labels and probabilities, the sampling points and the deformation map."""
    workspace = Workspace.open(workspace_path, mode="r")
    arrays = {f"labels/{k}": np.asarray(level) for k, level in enumerate(workspace.labels("prediction").levels)}
    probabilities = workspace.probability_pyramid()[0]
    arrays |= {f"probabilities/{k}": np.asarray(level) for k, level in enumerate(probabilities.levels)}
    arrays["points"] = workspace.sampling_points()
    arrays["deformation"] = workspace.deformation()[0]
    return arrays


@pytest.fixture(scope="module")
def serial(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("serial") / "out"
    code = main(["predict", str(data["tiff"]), str(data["zarr"]), "--model", str(data["slide_model"]),
                 "--out", str(out), "--json"])
    assert code == 0
    return out, [Workspace.open(p, mode="r").info for p in sorted(out.glob("*.m2mrf.zarr"))]


def test_each_slide_gets_a_workspace_as_the_gui_writes_it(data, serial) -> None:
    out, infos = serial
    assert sorted(p.name for p in out.glob("*.m2mrf.zarr")) == ["a_slide.m2mrf.zarr", "b_slide.m2mrf.zarr"]
    ref = resolve(str(data["slide_model"]))
    for workspace_path, info, source in zip(sorted(out.glob("*.m2mrf.zarr")), infos, (data["tiff"], data["zarr"])):
        arrays = _arrays(workspace_path)
        assert arrays["labels/0"].shape == (SIZE, SIZE) and len(
            [k for k in arrays if k.startswith("labels/")]) > 1
        assert arrays["probabilities/0"].dtype == np.float16 and arrays["probabilities/0"].shape[0] == 3
        assert arrays["points"].shape == (64 * 64, 2) and arrays["deformation"].ndim == 2
        provenance = info["provenance"]
        assert provenance["model"] == str(data["slide_model"]) and provenance["checkpoint"] == str(data["slide_model"])
        assert provenance["weights_sha256"] == ref.weights_sha256 and len(ref.weights_sha256) == 64
        assert provenance["kind"] == "deformed downsampling" and provenance["sampler"] == "learned"
        assert provenance["output_size"] == [64, 64] and provenance["threads"] == 1 and provenance["time"]
        assert provenance["source"] == str(source) and info["made_from"] == "slide"
        assert Path(info["source"]) == source.resolve()


def test_two_dask_workers_write_the_serial_bytes(data, serial, tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    out = tmp_path / "dask"
    start = time.perf_counter()
    code = main(["predict", str(data["tiff"]), str(data["zarr"]), "--model", str(data["slide_model"]),
                 "--out", str(out), "--workers", "2"])
    print(f"2 dask workers: {time.perf_counter() - start:.1f} s")
    assert code == 0
    expected_out, _ = serial
    for name in ("a_slide.m2mrf.zarr", "b_slide.m2mrf.zarr"):
        expected, got = _arrays(expected_out / name), _arrays(out / name)
        assert expected.keys() == got.keys()
        for key in expected:
            assert got[key].dtype == expected[key].dtype and got[key].shape == expected[key].shape, key
            assert got[key].tobytes() == expected[key].tobytes(), f"{name} {key} differs"


def test_a_model_that_does_not_fit_and_a_broken_slide_fail_alone(data, tmp_path: Path, capsys) -> None:
    out = tmp_path / "slide_model"
    inputs = [str(data["photograph"]), str(data["broken"]), str(data["zarr"])]
    code, lines, errors = _predict(capsys, *inputs, "--model", str(data["slide_model"]), "--out", str(out))
    assert code == 2 and len(errors) == 2, errors
    assert [line["input"] for line in lines] == inputs
    assert "a fundus photograph" in lines[0]["error"] and "slide model" in lines[0]["error"]
    assert str(data["broken"]) in lines[1]["error"] and "error" not in lines[2]
    assert [p.name for p in out.glob("*.m2mrf.zarr")] == ["slide.m2mrf.zarr"]

    out = tmp_path / "fundus_model"
    code, lines, errors = _predict(capsys, str(data["tiff"]), str(data["photograph"]),
                                   "--model", str(data["fundus_model"]), "--out", str(out))
    assert code == 2 and len(errors) == 1 and "a slide" in errors[0] and "fundus model" in errors[0], errors
    assert "error" not in lines[1] and lines[1]["kind"] == "photograph"
    assert [p.name for p in out.glob("*.m2mrf.zarr")] == ["eye.m2mrf.zarr"]


def test_the_write_gate_holds_for_slides(data, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    model = ["--model", str(data["slide_model"]), "--out", str(out)]
    assert _predict(capsys, str(data["zarr"]), *model)[0] == 0
    workspace = Workspace.open(out / "slide.m2mrf.zarr")
    corrected = np.zeros((SIZE, SIZE), np.uint8)
    corrected[:100, :100] = 2
    workspace.write_labels("corrected", corrected, colors={2: (0.0, 0.85, 1.0, 1.0)}, names={2: "vessel"})
    assert _predict(capsys, str(data["zarr"]), *model)[0] == 0  # the same slide again: corrections kept
    kept = Workspace.open(out / "slide.m2mrf.zarr", mode="r").labels("corrected").levels[0]
    np.testing.assert_array_equal(np.asarray(kept), corrected)

    # another slide of the same name: refused while the workspace holds corrections, --overwrite or not
    for extra in ([], ["--overwrite"]):
        code, lines, errors = _predict(capsys, str(data["tiff"]), *model, *extra)
        assert code == 2 and "corrections" in errors[0], errors
    np.testing.assert_array_equal(np.asarray(Workspace.open(out / "slide.m2mrf.zarr").labels("corrected").levels[0]),
                                  corrected)
    # without corrections: refused unless --overwrite
    other = tmp_path / "other"
    to_other = ["--model", str(data["slide_model"]), "--out", str(other)]
    assert _predict(capsys, str(data["zarr"]), *to_other)[0] == 0
    code, lines, errors = _predict(capsys, str(data["tiff"]), *to_other)
    assert code == 2 and "use --overwrite" in errors[0], errors
    assert _predict(capsys, str(data["tiff"]), *to_other, "--overwrite")[0] == 0
    assert Path(Workspace.open(other / "slide.m2mrf.zarr", mode="r").source) == data["tiff"].resolve()

    # another process writing the workspace: this slide fails with its pid, nothing else happens
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from napari_m2mrf.io.output_gate import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(other / "slide.m2mrf.zarr")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, lines, errors = _predict(capsys, str(data["tiff"]), *to_other)
        assert code == 2 and f"pid {holder.pid}" in errors[0], errors
    finally:
        holder.kill()
        holder.wait()
    assert lock_path_for(other / "slide.m2mrf.zarr").exists()  # the killed holder's file; the next run takes it
    assert _predict(capsys, str(data["tiff"]), *to_other)[0] == 0


def test_a_large_flat_image_gets_its_pyramid_in_the_output_workspace(data, tmp_path: Path, capsys, monkeypatch) -> None:
    from napari_m2mrf.io import formats, slides

    for module in (formats, slides):  # a 512×640 PNG counts as a slide here (as a >40 Mpx one does)
        monkeypatch.setattr(module, "FUNDUS_MAX_PIXELS", 100_000)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rgb = np.full((512, 640, 3), (200, 150, 190), np.uint8)
    rgb[100:300, 200:500] = (120, 60, 140)
    Image.fromarray(rgb).save(inputs / "flat.png")
    out = tmp_path / "out"
    code, lines, errors = _predict(capsys, str(inputs), "--model", str(data["slide_model"]), "--out", str(out))
    assert code == 0 and lines[0]["kind"] == "slide" and lines[0]["image_shape"] == [512, 640], errors
    assert sorted(p.name for p in inputs.iterdir()) == ["flat.png"]  # nothing written beside the input
    workspace = Workspace.open(out / "flat.m2mrf.zarr", mode="r")
    assert workspace.has_image and workspace.image.shape[-2:] == (512, 640)
    assert np.asarray(workspace.labels("prediction").levels[0]).shape == (512, 640)
