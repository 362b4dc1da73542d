"""Every generated bad input (``tests/bad_inputs.py``) fed to every read entry point that accepts it.

Each must end, within 10 s, in one clear message (the napari reader: a notification and no
layers, or lazy layers whose bad chunk becomes one notification; the CLI: exit code 2 and exactly
one ``napari-m2mrf: error:`` line; the config and checkpoint loaders: a ``UserError``), and no file
may be written or changed anywhere in the case's folder.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs import CASES, MARKER, Case, counts  # noqa: E402
import bad_density_inputs  # noqa: E402,F401  (adds the predict --density cases to CASES)

from napari_m2mrf.cli import main  # noqa: E402
from napari_m2mrf.errors import UserError  # noqa: E402

CASE_SECONDS = 10.0
ROOT = os.geteuid() == 0


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``folder`` (links not followed): mode, size, mtime."""
    found = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(top, name)
            info = os.lstat(path)
            found[os.path.relpath(path, folder)] = (info.st_mode, info.st_size if stat.S_ISREG(info.st_mode) else 0, info.st_mtime_ns)
    return found


def one_line(message: str) -> None:
    assert message and "\n" not in message.strip() and "Traceback" not in message, message


def check_problem(item: Case, message: str) -> None:
    if item.problem:
        assert re.search(item.problem, message), f"{item.name}: {message!r} does not match {item.problem!r}"


def run_reader(path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The napari reader on ``path``: messages notified (none if the plugin does not claim the path)."""
    from napari_m2mrf import napari_io

    messages: list[str] = []
    monkeypatch.setattr(napari_io, "_notify_error", messages.append)
    monkeypatch.setattr(napari_io, "_notify_info", lambda message: None)
    monkeypatch.setattr(napari_io, "_napari_progress", lambda name: None)
    reader = napari_io.get_reader(str(path))
    if reader is None:
        return messages
    layers = reader(str(path))
    if not (len(layers) == 1 and layers[0][0] is None):  # lazy layers: reading every chunk must notify instead of raising
        for data, _, _ in layers:
            for level in data if isinstance(data, list) else [data]:
                np.asarray(level)
        assert messages, f"{path}: layers returned and every chunk read without a problem"
    else:
        assert len(messages) == 1, messages
    return messages


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors (OneLineErrorParser: one line, exit 2)
        code = exc.code
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("napari-m2mrf: error:")]
    assert code == 2, (argv, code, captured.err[-2000:])
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err[-2000:]
    return errors[0]


def run_entry(entry: str, item: Case, path: Path, context: dict[str, Any], scratch: Path,
              capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str | None:
    if entry in ("reader", "reader_image"):
        messages = run_reader(context["image"] if entry == "reader_image" else path, monkeypatch)
        return messages[0] if messages else None
    if entry == "convert":
        out = scratch / "converted.zarr"
        message = run_cli(["convert", str(path), str(out), "--quiet"], capsys)
        assert not out.exists()
        return message
    if entry == "predict":
        out = scratch / "predicted"
        message = run_cli(
            ["predict", str(path), "--model", "fundus_m2mrf_w18s", "--out", str(out), "--thresholds", "0.5,0.5,0.5,0.5"], capsys
        )
        assert not out.exists() or not any(out.iterdir())
        return message
    if entry == "evaluate":
        return run_cli(["evaluate", str(context["pred"]), str(context["gt"]), "--classes", "EX"], capsys)
    if entry == "train":
        out = scratch / "run"
        message = run_cli(["train", str(context["config"]), "--output-dir", str(out)], capsys)
        assert not out.exists(), f"{item.name}: train made {out} before refusing its data"
        return message
    if entry == "cli":
        return run_cli(list(context["argv"]), capsys)
    if entry == "predict_model":
        image = scratch.parent / "eye.png"
        if not image.exists():
            from PIL import Image

            Image.fromarray(np.full((64, 80, 3), 90, np.uint8)).save(image)
        out = scratch / "predicted"
        message = run_cli(["predict", str(image), "--model", str(path), "--out", str(out)], capsys)
        assert not out.exists() or not any(out.iterdir())
        return message
    if entry == "convert_checkpoint":
        out = scratch / "converted.safetensors"
        message = run_cli(["convert-checkpoint", str(path), str(out), "--arch", "m2mrf_hrnetv2_w18s"], capsys)
        assert not out.exists()
        return message
    if entry == "loader":
        with pytest.raises(UserError) as raised:
            checkpoint_loader()(path)
        return str(raised.value)
    if entry == "yaml":
        from napari_m2mrf.io.input_gate import load_yaml

        with pytest.raises(UserError) as raised:
            load_yaml(path)
        return str(raised.value)
    if entry == "config":
        from training.config import load_config

        with pytest.raises(UserError) as raised:
            load_config(path)
        return str(raised.value)
    if entry == "safetensors":
        from napari_m2mrf.io.input_gate import check_safetensors_header

        with pytest.raises(UserError) as raised:
            check_safetensors_header(path)
        return str(raised.value)
    raise AssertionError(entry)


def checkpoint_loader():
    """The one function that loads a checkpoint file into a model (``path -> (model, metadata)``)."""
    from napari_m2mrf.models.checkpoints import load_checkpoint as load_model_file

    return load_model_file


CATEGORIES = ("fundus", "slide", "ome-zarr", "workspace", "prediction", "mask", "yaml", "safetensors",
              "dataset", "checkpoint", "cli")


def test_corpus_is_large_enough() -> None:
    found = counts()
    per_entry: dict[str, int] = {}
    for item in CASES:
        for entry in item.entries:
            per_entry[entry] = per_entry.get(entry, 0) + 1
    print(f"\n{len(CASES)} cases; per category: {found}; per entry point: {per_entry}")
    assert len(CASES) >= 150, found
    assert len({item.name for item in CASES}) == len(CASES)
    for category in CATEGORIES:
        assert found.get(category), category
    for entry in ("reader", "convert", "predict", "evaluate", "train", "cli", "predict_model", "convert_checkpoint", "loader"):
        assert per_entry.get(entry, 0) >= 10, (entry, per_entry)
    argv = {item.name.removeprefix("cli_").split("_")[0] for item in CASES if item.category == "cli"}
    assert {"predict", "convert", "evaluate", "train", "convert", "sample", "models"} <= argv, argv


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "item",
    [pytest.param(item, marks=pytest.mark.xfail(strict=True, reason=item.known_bug)) if item.known_bug else item
     for item in CASES],
    ids=[item.name for item in CASES],
)
def test_bad_input(item: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    if item.needs_non_root and ROOT:
        pytest.skip("permissions do not restrict root")
    for name, value in item.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a workspace in the user cache would be a write too
    case_folder = tmp_path / "case"
    scratch = tmp_path / "scratch"
    case_folder.mkdir()
    scratch.mkdir()
    path, context = item.make(case_folder)
    watched = [case_folder, path.parent] if path.parent != case_folder else [case_folder]
    before = [snapshot(folder) for folder in watched]
    try:
        for entry in item.entries:
            started = time.monotonic()
            message = run_entry(entry, item, path, context, scratch, capsys, monkeypatch)
            seconds = time.monotonic() - started
            assert seconds < CASE_SECONDS, f"{item.name} via {entry}: {seconds:.1f} s"
            if message is not None:
                one_line(message)
                check_problem(item, message)
        assert [snapshot(folder) for folder in watched] == before, f"{item.name}: files were written or changed"
        cached = [p for p in (tmp_path / "cache").rglob("*") if not p.is_dir()]  # (an empty cache folder is no write)
        assert not cached, f"{item.name}: something was written to the user cache: {cached}"
        assert not any(scratch.iterdir()), f"{item.name}: {list(scratch.iterdir())}"
        assert not list(tmp_path.rglob(MARKER)), f"{item.name}: code in the file ran while it was loaded"
    finally:
        if item.needs_non_root:
            path.chmod(0o644)


# -- a few real processes ------------------------------------------------------------------------------


def _case(name: str) -> Case:
    return next(item for item in CASES if item.name == name)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("fifo.png", "convert"),
        ("workspace_corrupt_chunk_level0", "convert"),
        ("prediction_png_declares_100000_squared", "evaluate"),
    ],
)
def test_real_process(tmp_path: Path, name: str, command: str) -> None:
    item = _case(name)
    path, context = item.make(tmp_path)
    if command == "convert":
        argv = ["convert", str(path), str(tmp_path / "out.zarr"), "--quiet"]
    else:
        argv = ["evaluate", str(context["pred"]), str(context["gt"]), "--classes", "EX"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "napari_m2mrf", *argv], capture_output=True, text=True, timeout=60, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("napari-m2mrf: error:"), done.stderr
    check_problem(item, lines[0])
    assert not (tmp_path / "out.zarr").exists()


# -- limits can be raised ------------------------------------------------------------------------------


def test_limit_is_raised_by_its_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from napari_m2mrf.errors import LimitExceeded
    from napari_m2mrf.io.photographs import read_image

    path = tmp_path / "eye.png"
    Image.fromarray(np.zeros((64, 80, 3), np.uint8)).save(path)
    monkeypatch.setenv("NAPARI_M2MRF_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(LimitExceeded, match="NAPARI_M2MRF_MAX_IMAGE_PIXELS"):
        read_image(path)
    monkeypatch.setenv("NAPARI_M2MRF_MAX_IMAGE_PIXELS", "1e4")
    assert read_image(path).data.shape == (64, 80, 3)
    monkeypatch.setenv("NAPARI_M2MRF_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(UserError, match="NAPARI_M2MRF_MAX_IMAGE_PIXELS"):
        read_image(path)


def test_bomb_tiff_opens_once_the_ratio_limit_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal is a limit, not a crash: raised, the 100,000² header is accepted (lazily, nothing decoded)."""
    from napari_m2mrf.io.formats import inspect_source

    path, _ = _case("tiled_tiff_declares_100000_squared").make(tmp_path)
    monkeypatch.setenv("NAPARI_M2MRF_MAX_COMPRESSION_RATIO", str(10**9))
    info = inspect_source(path)
    assert (info.height, info.width) == (100_000, 100_000) and info.kind == "slide"


def test_yaml_loader_keeps_plain_configs_and_small_aliases() -> None:
    from napari_m2mrf.io.input_gate import load_yaml

    assert load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
    assert load_yaml("") is None


# -- property: every supported pixel type and channel count reads as RGB8 -------------------------------

SUPPORTED = {
    "uint8": lambda rng, shape: rng.integers(0, 256, shape, dtype=np.uint8),
    "uint16": lambda rng, shape: rng.integers(0, 65536, shape, dtype=np.uint16),
    "float32": lambda rng, shape: rng.random(shape, dtype=np.float32),
    "bool": lambda rng, shape: rng.random(shape) > 0.5,
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dtype=st.sampled_from(sorted(SUPPORTED)),
    channels=st.sampled_from([0, 1, 2, 3, 4, 5]),
    height=st.integers(16, 40),
    width=st.integers(16, 40),
    seed=st.integers(0, 2**16),
    nan=st.booleans(),
)
def test_photograph_reader_gives_rgb8_or_a_clear_error(
    tmp_path_factory: pytest.TempPathFactory, dtype: str, channels: int, height: int, width: int, seed: int, nan: bool
) -> None:
    import tifffile

    from napari_m2mrf.napari_io import layer_data_for_path

    folder = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(seed)
    channels = 0 if dtype == "bool" else channels  # TIFF's 1-bit images are bilevel (one sample)
    shape = (height, width) if channels == 0 else (height, width, channels)
    pixels = SUPPORTED[dtype](rng, shape)
    if nan and dtype == "float32":
        pixels.flat[0] = np.nan
    path = folder / "image.tif"
    extra = {"photometric": "minisblack", "planarconfig": "contig"} if channels in (2, 5) else {}
    tifffile.imwrite(path, pixels, **extra)
    before = snapshot(folder)
    refused = channels == 5 or (nan and dtype == "float32")
    if refused:
        with pytest.raises(UserError) as raised:
            layer_data_for_path(path)
        one_line(str(raised.value))
    else:
        layers = layer_data_for_path(path)
        data = np.asarray(layers[0][0])
        assert data.shape == (height, width, 3) and data.dtype == np.uint8
        if dtype == "uint8" and channels in (3, 4):
            assert np.array_equal(data, pixels[..., :3])
        if dtype == "uint8" and channels in (0, 1):
            assert np.array_equal(data[..., 0], pixels.reshape(height, width))
    assert snapshot(folder) == before


# -- one real viewer -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_viewer_open_reports_bad_inputs_and_stays_usable(make_napari_viewer, tmp_path: Path) -> None:
    from napari.utils.notifications import notification_manager
    from PIL import Image

    viewer = make_napari_viewer()
    received: list[Any] = []
    notification_manager.notification_ready.connect(received.append)
    try:
        for name in ("fifo.png", "workspace_corrupt_chunk_coarsest", "tiled_tiff_declares_100000_squared", "png_declares_100000x100000"):
            folder = tmp_path / name
            folder.mkdir()
            path, _ = _case(name).make(folder)
            before = snapshot(folder)
            count = len(received)
            viewer.open(str(path), plugin="napari-m2mrf")
            assert len(received) > count and any(path.name in str(n.message) for n in received[count:]), name
            assert snapshot(folder) == before
        good = tmp_path / "good.png"
        Image.fromarray(np.full((64, 80, 3), 100, np.uint8)).save(good)
        viewer.open(str(good), plugin="napari-m2mrf")
        assert viewer.layers[-1].data.shape == (64, 80, 3)
    finally:
        notification_manager.notification_ready.disconnect(received.append)
