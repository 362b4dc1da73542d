"""The installed environment is the one the project declares and locks, and its parts work together.

These tests catch drift on a fresh machine: an import the package makes but does not declare, a test
dependency declared as a runtime one, a broken pip resolution (`pip check`), a napari plugin npe2
cannot discover, a dask.distributed that cannot start a cluster, and a Qt binding that does not load.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import REPO_ROOT

PACKAGES = ("napari_m2mrf", "training", "sample_data")
OWN_MODULES = set(PACKAGES) | {"conftest"}
DISTRIBUTION = "napari-m2mrf"

# Declared runtime dependencies the package needs without importing them by name, and why.
USED_WITHOUT_IMPORT = {
    "imagecodecs": "tifffile decodes JPEG, JPEG 2000 and other slide tiles through it",
    "openslide-bin": "ships the OpenSlide library that openslide-python loads",
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_modules(folders: list[Path]) -> dict[str, list[str]]:
    """Every absolute import's top-level module name in ``folders``, with the first places it occurs."""
    found: dict[str, list[str]] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], []).append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    return found


def _third_party(found: dict[str, list[str]], local: set[str]) -> dict[str, list[str]]:
    return {m: places for m, places in found.items() if m not in sys.stdlib_module_names and m not in local}


def _declared() -> dict[str | None, set[str]]:
    """The project's requirements by extra (``None``: install_requires), as normalised names."""
    by_extra: dict[str | None, set[str]] = {}
    for line in metadata.requires(DISTRIBUTION) or []:
        requirement = Requirement(line)
        extra = None
        if requirement.marker is not None:
            extra = re.search(r'extra\s*==\s*"([^"]+)"', str(requirement.marker)).group(1)
        by_extra.setdefault(extra, set()).add(_normalise(requirement.name))
        for nested in requirement.extras:  # dask[distributed] declares distributed too
            by_extra[extra] |= {
                _normalise(Requirement(r).name)
                for r in metadata.requires(requirement.name) or []
                if f'extra == "{nested}"' in r
            }
    return by_extra


@functools.cache
def _top_level_to_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()  # scans every installed distribution: once per session


def _distributions_of(module: str) -> set[str]:
    return {_normalise(d) for d in _top_level_to_distributions().get(module, [])}


def test_every_module_the_package_imports_is_a_declared_dependency() -> None:
    declared = _declared()
    allowed = set().union(*declared.values())  # a module behind an extra is imported only where that extra is asked for
    imports = _third_party(_imported_top_level_modules([REPO_ROOT / p for p in PACKAGES]), set(PACKAGES))
    undeclared = {
        module: places[:3] for module, places in imports.items() if not (_distributions_of(module) & allowed)
    }
    assert not undeclared, f"imported but not declared in setup.cfg: {undeclared}"


def test_module_behind_an_extra_is_imported_only_inside_functions() -> None:
    """A runtime import of an optional package must be lazy, so the plain install works without it."""
    declared = _declared()
    optional_only = set().union(*(names for extra, names in declared.items() if extra not in (None, "test"))) - declared[None]
    problems = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:  # module level only
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    dists = _distributions_of(name.split(".")[0])
                    if name.split(".")[0] not in sys.stdlib_module_names and dists and dists <= optional_only:
                        problems.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {name} at module level")
    assert not problems, problems


def test_every_runtime_dependency_is_used_by_the_package() -> None:
    """install_requires holds what the package itself needs; what only tests need lives in the test extra."""
    imports = _third_party(_imported_top_level_modules([REPO_ROOT / p for p in PACKAGES]), set(PACKAGES))
    used = set().union(*(_distributions_of(module) for module in imports)) | set(USED_WITHOUT_IMPORT)
    unused = _declared()[None] - used
    assert not unused, f"declared in install_requires but never imported by the package: {sorted(unused)}"


def test_tests_and_benchmarks_import_only_declared_packages() -> None:
    declared = set().union(*_declared().values())
    local = OWN_MODULES | {"tests", "benchmarks"} | {
        p.stem for folder in ("tests", "benchmarks") for p in (REPO_ROOT / folder).iterdir() if p.suffix == ".py" or p.is_dir()
    }
    imports = _third_party(_imported_top_level_modules([REPO_ROOT / "tests", REPO_ROOT / "benchmarks"]), local)
    undeclared = {m: places[:2] for m, places in imports.items() if not (_distributions_of(m) & declared)}
    assert not undeclared, f"tests or benchmarks import packages no extra declares: {undeclared}"


def test_torch_is_the_locked_cpu_build() -> None:
    import torch

    assert torch.__version__ == "2.13.0+cpu"
    assert not any(_normalise(d.metadata["Name"]).startswith("nvidia-") for d in metadata.distributions())


def test_lock_pins_every_installed_package_with_hashes() -> None:
    lock = (REPO_ROOT / "requirements.lock").read_text()
    pinned = {_normalise(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", lock, re.M)}
    assert pinned, "requirements.lock holds no pins"
    assert lock.count("--hash=sha256:") >= len(pinned)
    assert pinned["torch"] == "2.13.0+cpu"
    assert pinned["dask"] == pinned["distributed"]
    installed = {_normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}
    tooling = {"pip", DISTRIBUTION}
    differing = {
        name: (version, pinned.get(name)) for name, version in installed.items()
        if name not in tooling and pinned.get(name) != version
    }
    assert not differing, f"installed packages that differ from the lock (installed, locked): {differing}"


def test_pip_check_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_npe2_discovers_the_plugin() -> None:
    from npe2 import PluginManager

    manager = PluginManager()
    manager.discover()
    manifest = manager.get_manifest(DISTRIBUTION)
    assert manifest.name == DISTRIBUTION
    assert manifest.contributions.widgets and manifest.contributions.readers


def test_a_local_dask_distributed_cluster_runs_a_task() -> None:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            assert client.submit(pow, 3, 4).result(timeout=60) == 81


def test_pyqt6_loads_and_makes_an_application() -> None:
    code = "from PyQt6.QtWidgets import QApplication, QLabel; app = QApplication([]); QLabel('ok'); print('ok')"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def _fake_distribution(folder: Path, name: str, version: str) -> None:
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_a_mismatched_dask_and_distributed_stop_predict_at_once(tmp_path: Path) -> None:
    """An environment holding an old distributed beside the new dask (metadata found first on the path)
    gets one line naming both versions, exit 2, and no output folder."""
    shadow = tmp_path / "site"
    _fake_distribution(shadow, "distributed", "2021.4.1")
    image = tmp_path / "a.png"
    image.write_bytes(b"")  # never read: the check comes first
    out = tmp_path / "OUT"
    env = {**os.environ, "PYTHONPATH": str(shadow)}
    cli = Path(sys.executable).with_name("napari-m2mrf")
    result = subprocess.run(
        [str(cli), "predict", str(image), str(image), "--model", "fundus_m2mrf_w18s", "--out", str(out), "--workers", "2"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-m2mrf: error: ")
    assert f"dask {metadata.version('dask')}" in lines[0] and "distributed 2021.4.1" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("requirements", "expected"),
    [
        (['distributed<2026.8.1,>=2026.8.0; extra == "distributed"'], "<2026.8.1,>=2026.8.0"),
        (['distributed==2024.8.0; extra == "distributed"', "numpy>=1.24"], "==2024.8.0"),
        (["numpy>=1.24", 'bokeh>=3; extra == "diagnostics"'], None),
        (None, None),
    ],
)
def test_distributed_requirement_is_read_from_dask_metadata(requirements: list[str] | None, expected: str | None) -> None:
    from napari_m2mrf.compat import distributed_requirement

    requirement = distributed_requirement(requirements)
    assert (None if requirement is None else str(requirement.specifier)) == (
        None if expected is None else str(Requirement(f"distributed{expected}").specifier)
    )
