"""The per-user sample cache: configurable, and a clear message when it cannot be written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from napari_m2mrf.cache import cache_dir
from napari_m2mrf.errors import UserError
from sample_data.skimage_samples import ihc, retina


def test_cache_folder_is_created_under_the_configured_root(private_cache: Path) -> None:
    folder = cache_dir("fundus")
    assert folder == private_cache / "fundus" and folder.is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_cache_folder_says_what_to_do(private_cache: Path) -> None:
    private_cache.mkdir()
    private_cache.chmod(0o500)
    with pytest.raises(UserError, match="NAPARI_M2MRF_CACHE"):
        cache_dir("fundus")


def test_cache_folder_under_a_file_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NAPARI_M2MRF_CACHE", str(blocker))
    with pytest.raises(UserError, match="not writable.*NAPARI_M2MRF_CACHE"):
        cache_dir("slide")


def test_skimage_samples_are_real_rgb_photographs() -> None:
    fundus, tile = retina(), ihc()
    assert fundus.shape == (1411, 1411, 3) and fundus.dtype.name == "uint8"
    assert tile.shape == (512, 512, 3) and tile.dtype.name == "uint8"
    # a fundus photograph is red-dominated inside the disc and black outside it
    centre = fundus[600:800, 600:800].reshape(-1, 3).mean(axis=0)
    assert centre[0] > centre[1] > centre[2]
    assert fundus[:20, :20].max() < 40
