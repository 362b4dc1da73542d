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


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a new virtual environment holding the package only as its built wheel.

    ``python -m build`` makes the wheel (with the locked setuptools, no network); the environment sees
    the locked third-party packages of the test environment through a path entry, but neither the
    source tree nor its editable install, so whatever the wheel lacks (manifest, bundled checkpoints,
    configs) fails there.
    """
    import site
    import subprocess
    import sys
    import sysconfig

    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(root / "dist"), str(REPO_ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = (root / "dist").glob("napari_m2mrf-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    locked = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "locked_environment.pth").write_text("\n".join(locked) + "\n")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True, capture_output=True,
    )
    return venv / "bin"
