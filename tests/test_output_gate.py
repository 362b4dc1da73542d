"""The write side's gate (``napari_m2mrf.io.output_gate``) and the command line's error boundary, in process:
containment, locks, overwrite refusals, resumable convert with source identity, no empty folders."""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_m2mrf.cli import main
from napari_m2mrf.errors import UserError, user_message
from napari_m2mrf.io.fundus_results import CORRECTED, fundus_label_style, save_fundus_labels
from napari_m2mrf.io.output_gate import (
    OutputEscape,
    OutputLocked,
    output_folder,
    output_lock,
    resolve_inside,
    source_identity,
)
from napari_m2mrf.io.workspace import Workspace

HOLD_LOCK = """
import sys, time
from napari_m2mrf.io.output_gate import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _tiff(path: Path, seed: int, shape: tuple[int, int] = (600, 500)) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    return image


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-m2mrf: error: "), err
    return err[0]


def test_symlink_escapes_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    workspace = Workspace.create(tmp_path / "w.m2mrf.zarr")
    (workspace.path / "labels").symlink_to(outside, target_is_directory=True)  # a received workspace
    colors, names = fundus_label_style()
    with pytest.raises(OutputEscape, match="outside"):
        workspace.write_labels("prediction", np.zeros((8, 8), np.uint8), colors=colors, names=names)
    with pytest.raises(OutputEscape):
        resolve_inside(tmp_path, "..", "x")
    assert list(outside.iterdir()) == []
    inside = tmp_path / "inner"
    inside.mkdir()
    (tmp_path / "link").symlink_to(inside)
    assert resolve_inside(tmp_path, "link", "x") == tmp_path / "link" / "x"  # links within the output are fine


def test_a_second_writer_gets_the_lock_error_and_a_killed_holder_releases_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "scan.tif"
    _tiff(source, 0)
    out = tmp_path / "scan.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["convert", str(source), str(out), "--quiet"]) == 2
        line = _one_error_line(capsys)
        assert f"is being written by another napari-m2mrf process (pid {holder.pid})" in line
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["convert", str(source), str(out), "--quiet"]) == 0
    with output_lock(out), output_lock(out):  # re-entrant within one process
        pass
    assert not list(tmp_path.glob(".*.lock"))  # released locks leave no file


def test_refused_input_leaves_no_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "deep" / "out"
    code = main(["predict", str(bad), "--model", "hrnetv2_w18s", "--out", str(out), "--thresholds", "0.5,0.5,0.5,0.5"])
    assert code == 2
    _one_error_line(capsys)
    assert not (tmp_path / "deep").exists()
    assert main(["convert", str(bad), str(tmp_path / "new" / "x.zarr")]) == 2
    _one_error_line(capsys)
    assert not (tmp_path / "new").exists()
    with pytest.raises(RuntimeError), output_folder(tmp_path / "a" / "b"):
        raise RuntimeError("refused")
    assert not (tmp_path / "a").exists()


def test_convert_resumes_only_the_same_source_and_ignores_partial_files(tmp_path: Path) -> None:
    from napari_m2mrf.jobs import Cancelled, CancelToken

    first, second = tmp_path / "first.tif", tmp_path / "second.tif"
    image_a, image_b = _tiff(first, 1), _tiff(second, 2)
    out = tmp_path / "store.zarr"
    cancel = CancelToken()
    cancel.set()
    with pytest.raises(Cancelled):  # an interrupted conversion of the first source
        Workspace.create(out, source=first).write_image(
            np.moveaxis(image_a, -1, 0), chunk=128, cancel=cancel, source_id=source_identity(first)
        )
    chunk_folder = next(p for p in (out / "0").rglob("*") if p.is_file() and p.name != "zarr.json").parent
    (chunk_folder / "9.0123abcd.partial").write_bytes(b"half a chunk")  # a killed aside-write
    assert main(["convert", str(second), str(out), "--chunk", "128", "--quiet"]) == 0
    stored = Workspace.open(out)
    assert stored.has_image and np.array_equal(np.asarray(stored.image.levels[0][...]), np.moveaxis(image_b, -1, 0))
    assert not list(out.rglob("*.partial"))
    assert stored.info["source_identity"]["sha256"] == source_identity(second)["sha256"]
    (chunk_folder / "0.feedbeef.partial").write_bytes(b"x")  # left by a later kill: never counted as a chunk
    assert np.asarray(Workspace.open(out).image.levels[-1][...]).shape[0] == 3


def test_convert_never_deletes_corrections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "scan.tif"
    _tiff(source, 3)
    out = tmp_path / "w.zarr"
    corrected = np.zeros((600, 500), np.uint8)
    corrected[10:20, 10:20] = 2
    save_fundus_labels(out, corrected, source=source)  # only the user's corrections, NGFF 0.5
    for extra in ([], ["--overwrite"]):
        assert main(["convert", str(source), str(out), "--ngff", "0.4", "--quiet", *extra]) == 2
        assert "labels/corrected" in _one_error_line(capsys)
    assert np.array_equal(np.asarray(Workspace.open(out).labels(CORRECTED).levels[0][...]), corrected)
    assert main(["convert", str(source), str(out), "--quiet"]) == 0  # same version: the image joins the corrections
    workspace = Workspace.open(out)
    assert workspace.has_image and np.array_equal(np.asarray(workspace.labels(CORRECTED).levels[0][...]), corrected)
    other = tmp_path / "other.tif"
    _tiff(other, 4)
    assert main(["convert", str(other), str(out), "--quiet", "--overwrite"]) == 2
    assert "another image" in _one_error_line(capsys)


def test_user_message_maps_expected_failures_and_lets_bugs_through() -> None:
    import zlib

    import yaml

    full = OSError(errno.ENOSPC, "No space left on device", "/data/out.zarr/0/c/0/0")
    assert user_message(full) == "/data/out.zarr/0/c/0/0: no space left on the device"
    assert user_message(OSError(errno.EROFS, "Read-only file system", "/ro")) == "/ro: read-only file system"
    assert user_message(UserError("bad\ninput")) == "bad input"
    assert user_message(OutputLocked("x is being written")) == "x is being written"
    assert "corrupt compressed data" in user_message(zlib.error("Error -3 while decompressing"))
    try:
        yaml.safe_load("a: [1, 2")
    except yaml.YAMLError as exc:
        assert user_message(exc).startswith("invalid YAML")
    assert user_message(KeyError("bug")) is None and user_message(AttributeError("bug")) is None


def test_set_values_of_the_wrong_kind_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("run:\n  iterations: 2\n")
    for value in ("run.iterations=[1, 2", "run.iterations=abc", "run.nope=1"):
        started = time.perf_counter()
        assert main(["train", str(config), "--set", value]) == 2, value
        _one_error_line(capsys)
        assert time.perf_counter() - started < 30
