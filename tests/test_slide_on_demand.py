"""The sample slide made on demand: opens at once, same level 0 as the written sample, coarser levels close
to it, every chunk made once and kept in the cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from napari_m2mrf.io import made_on_read
from napari_m2mrf.io.slides import open_label_pyramids, open_pyramid
from napari_m2mrf.napari_io import slide_layer_data
from sample_data.slide_on_demand import sample_slide_on_demand
from sample_data.slide_sample import generate_slide

SIZE = 2048  # 3 levels: 2048², 1024², 512²
SEED = 3


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):
    return generate_slide(tmp_path_factory.mktemp("written"), size=SIZE, seed=SEED)


@pytest.fixture
def forget_registrations(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh registry, as in a new session."""
    monkeypatch.setattr(made_on_read, "_registered", {})


def _chunk_files(store: Path) -> int:
    return sum(1 for path in store.rglob("c/*/*") if path.is_file()) + sum(
        1 for path in store.rglob("c/*/*/*") if path.is_file())


def test_level_0_is_the_written_sample_and_coarser_levels_are_close(
    private_cache: Path, forget_registrations: None, written
) -> None:
    store = sample_slide_on_demand(size=SIZE, seed=SEED)
    made, stored = open_pyramid(store), open_pyramid(written.ome_zarr)
    assert [level.shape for level in made.levels] == [level.shape for level in stored.levels][: len(made.levels)]
    assert made.downsamples == stored.downsamples[: len(made.levels)] and made.pixel_size_um == stored.pixel_size_um
    assert np.array_equal(made.levels[0][:], stored.levels[0][:])
    (made_truth,), (stored_truth,) = open_label_pyramids(store), open_label_pyramids(written.ome_zarr)
    assert np.array_equal(made_truth.levels[0][:], stored_truth.levels[0][:])
    for k in range(1, len(made.levels)):  # made from level 0 directly (module docstring): close, not equal
        difference = np.abs(made.levels[k][:].astype(int) - stored.levels[k][:].astype(int))
        assert difference.mean() < 4.0, f"level {k}: mean difference {difference.mean():.2f} grey levels"
        agree = (made_truth.levels[k][:] == stored_truth.levels[k][:]).mean()
        assert agree > 0.97, f"labels level {k}: {agree:.3f} agree"


def test_chunks_are_made_once_and_kept_for_the_next_session(
    private_cache: Path, forget_registrations: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sample_slide_on_demand(size=SIZE, seed=SEED)
    assert _chunk_files(store) == 0, "nothing is made before it is read"
    first = open_pyramid(store).levels[1][:, :300, :300]  # two 256² chunks of each axis: 4 chunks
    assert _chunk_files(store) == 4
    monkeypatch.setattr(made_on_read, "_registered", {})  # a new session: a new registration, the same store
    calls: list[tuple] = []
    again = sample_slide_on_demand(size=SIZE, seed=SEED)
    level = open_pyramid(again).levels[1]
    make = level.make
    level.make = lambda region: calls.append(region) or make(region)
    assert np.array_equal(level[:, :300, :300], first) and calls == [], "kept chunks are read, not made again"
    level[:, 600:, 600:]
    assert len(calls) == 4 and _chunk_files(store) == 8


def test_the_32k_sample_opens_as_layers_within_seconds(private_cache: Path, forget_registrations: None) -> None:
    start = time.perf_counter()
    layers = slide_layer_data(sample_slide_on_demand())
    seconds = time.perf_counter() - start
    (image, meta, _), (labels, _, _) = layers
    assert image[0].shape == (32768, 32768, 3) and len(image) == 7 and meta["scale"] == (0.25, 0.25)
    assert np.asarray(image[-1]).mean() > 100 and len(labels) == 7
    assert seconds < 30, f"{seconds:.1f} s (about 3 s on an idle 2-core VM; BENCHMARKS.md)"
