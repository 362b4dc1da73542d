"""Bad ``predict --density MAP`` inputs (issue 17), registered into ``bad_inputs.CASES`` on import.

Each is a whole command line run in-process (the ``cli`` entry of ``tests/test_bad_inputs.py``): one
``napari-m2mrf: error:`` line, exit code 2, nothing written, within 10 s. The map is checked before any
input is read or any model loaded, so the command lines use the corpus's good photograph and model.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
from bad_inputs import MARKER, PREDICT, RGB, _cli_inputs, _WritesMarker, case, encoded, fifo, symlink, write


def _npy(array: np.ndarray) -> Callable[[Path], Path]:
    return lambda path: (np.save(path, array, allow_pickle=array.dtype.hasobject), path)[1]


def _npy_header(header: str, payload: bytes = b"", version: bytes = b"\x01\x00") -> bytes:
    text = header.ljust(117) + "\n"
    size = struct.pack("<H", len(text)) if version == b"\x01\x00" else struct.pack("<I", len(text))
    return b"\x93NUMPY" + version + size + text.encode("latin1") + payload


def _pickled_object_array(path: Path) -> Path:
    """An object ``.npy`` whose pickle, if loaded, would create the marker file."""
    array = np.empty(2, dtype=object)
    array[0] = _WritesMarker(str(path.parent / MARKER))
    np.save(path, array, allow_pickle=True)
    return path


def _raw_pickle(path: Path) -> Path:
    return write(path, pickle.dumps(_WritesMarker(str(path.parent / MARKER))))


def _image(array: np.ndarray, fmt: str) -> Callable[[Path], Path]:
    return lambda path: write(path, encoded(array, fmt))


def _workspace_without_map(path: Path) -> Path:
    from napari_m2mrf.io.workspace import Workspace

    Workspace.create(path)
    return path


_F = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }"
DENSITY_CASES: list[tuple[str, Callable[[Path], Any], str, str]] = [
    # (name, maker of the map at the given path, file name, message pattern)
    ("missing", lambda p: p, "absent.npy", r"no such"),
    ("nan", _npy(np.full((16, 16), np.nan, np.float32)), "map.npy", r"NaN"),
    ("one_nan", _npy(np.where(np.eye(16) > 0, np.nan, 1.0)), "map.npy", r"NaN"),
    ("infinite", _npy(np.full((16, 16), np.inf)), "map.npy", r"infinite"),
    ("all_zeros", _npy(np.zeros((16, 16), np.float32)), "map.npy", r"zero everywhere"),
    ("negative", _npy(-np.ones((16, 16))), "map.npy", r"negative"),
    ("one_negative_pixel", _npy(np.where(np.eye(16) > 0, -1e-9, 1.0)), "map.npy", r"negative"),
    ("one_pixel", _npy(np.ones((1, 1), np.float32)), "map.npy", r"1×1|at least 2×2"),
    ("one_row", _npy(np.ones((1, 500), np.float32)), "map.npy", r"at least 2×2"),
    ("empty", _npy(np.ones((0, 16), np.float32)), "map.npy", r"at least 2×2|empty"),
    ("three_d", _npy(np.ones((4, 16, 16), np.float32)), "map.npy", r"2-D"),
    ("one_d", _npy(np.ones(256, np.float32)), "map.npy", r"2-D"),
    ("scalar", _npy(np.float32(3.0)), "map.npy", r"2-D"),
    ("strings", _npy(np.array([["a", "b"], ["c", "d"]])), "map.npy", r"numbers"),
    ("complex", _npy(np.ones((8, 8), np.complex64)), "map.npy", r"numbers"),
    ("structured", _npy(np.zeros((8, 8), dtype=[("a", "<f4"), ("b", "<f4")])), "map.npy", r"numbers"),
    ("object_pickle_would_run_code", _pickled_object_array, "map.npy", r"numbers|object"),
    ("raw_pickle_named_npy", _raw_pickle, "map.npy", r"not a density map"),
    ("huge_declared", lambda p: write(p, _npy_header(_F % "(100000, 100000)")), "map.npy", r"MAX_IMAGE_PIXELS"),
    ("truncated", lambda p: write(p, _npy_header(_F % "(64, 64)", b"\0" * 100)), "map.npy", r"truncated|shorter"),
    ("header_garbage", lambda p: write(p, _npy_header("{'descr': os.system('touch x')}")), "map.npy",
     r"not a readable \.npy"),
    ("header_negative_shape", lambda p: write(p, _npy_header(_F % "(-4, 16)")), "map.npy", r"not a readable|2×2|empty"),
    ("npy_version_9", lambda p: write(p, _npy_header(_F % "(4, 4)", b"\0" * 64, b"\x09\x00")), "map.npy",
     r"not a readable \.npy"),
    ("text_file", lambda p: write(p, b"0.1 0.2\n0.3 0.4\n"), "map.txt", r"not a density map"),
    ("empty_file", lambda p: write(p, b""), "map.npy", r"empty"),
    ("black_png", _image(np.zeros((32, 32, 3), np.uint8), "PNG"), "map.png", r"zero everywhere"),
    ("tiny_png", _image(RGB[:4, :4], "PNG"), "map.png", r"at least"),
    ("truncated_png", lambda p: write(p, encoded(RGB, "PNG")[:60]), "map.png", r"truncated|not a readable|cannot"),
    ("folder", lambda p: (p.mkdir(), p)[1], "maps", r"not a density map"),
    ("workspace_without_map", _workspace_without_map, "other.m2mrf.zarr", r"sampling/deformation"),
    ("fifo", fifo, "map.npy", r"FIFO|not a regular"),
    ("dangling_link", lambda p: symlink(p, p.parent / "gone.npy"), "map.npy", r"missing|no such"),
]

for name, make, file_name, problem in DENSITY_CASES:
    def _make(folder: Path, make=make, file_name=file_name) -> tuple[Path, dict[str, Any]]:
        values = _cli_inputs(folder)
        path = folder / file_name
        made = make(path)
        return Path(values["image"]), {"argv": [part.format(**values) for part in PREDICT] + ["--density", str(made)]}

    case(f"cli_predict_density_{name}", "cli", ("cli",), problem)(_make)


def _fundus_model_with_a_good_map(folder: Path) -> tuple[Path, dict[str, Any]]:
    values = _cli_inputs(folder)
    np.save(folder / "good.npy", np.ones((8, 8), np.float32))
    return Path(values["image"]), {"argv": [part.format(**values) for part in PREDICT]
                                   + ["--density", str(folder / "good.npy")]}


case("cli_predict_density_with_a_fundus_model", "cli", ("cli",), r"slide model")(_fundus_model_with_a_good_map)
