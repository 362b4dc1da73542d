"""Shared test fixtures: the real-data folder (skipped when absent) and a private sample cache."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real IDRiD images, slides); the test is skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("real data folder ../shared/data is absent")
    return SHARED_DATA


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty sample-data cache folder used instead of the user's for one test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_M2MRF_CACHE", str(folder))
    return folder
