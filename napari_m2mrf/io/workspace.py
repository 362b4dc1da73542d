"""The workspace: one OME-Zarr store per image holding everything the plugin makes for it.

Layout (``<name>.m2mrf.zarr``, NGFF 0.5 on zarr v3 by default, 0.4 on zarr v2 on request)::

    0 1 2 …                   image pyramid (C, Y, X) uint8, multiscales + omero metadata
    labels/<name>/0 1 …       label pyramids (Y, X) uint8 with image-label colours and names
                              ("prediction", "corrected", "ground_truth", …)
    probabilities             (K, Y, X) float16 per-class maps at a coarse level (fundus), or
    probabilities/0 1 …       a multiscale (K, Y, X) float16 pyramid whose level 0 is ``downsample``
                              level-0 pixels per pixel (slides; attrs: downsample, classes)
    sampling/points           (N, 2) float32 sampling locations, level-0 pixels (y, x)
    sampling/deformation      (Y, X) float32 sampling-density map
    attrs["m2mrf"]            workspace version, source path, provenance, made_from ("photograph" or
                              "slide") and the image's layer name

Whole arrays and label pyramids are replaced atomically (built aside, then renamed in), so a
crash never leaves a half-written layer as the only copy; a region write changes whole chunks,
each of which zarr writes atomically. Every write goes through ``napari_m2mrf.io.output_gate``: it
holds the workspace's lock (a second writing process gets a clear error), and refuses to write
through a symbolic link that leads outside the workspace.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.errors import UserError
from napari_m2mrf.io import ngff
from napari_m2mrf.io.atomic import (
    atomic_path,
    remove_stale_siblings,
    replace,
    temporary_sibling,
)
from napari_m2mrf.io.output_gate import check_tree, output_lock, output_store, remove_partials, resolve_inside
from napari_m2mrf.io.omezarr import (
    COMPLETE_KEY,
    label_names,
    label_pyramid_from_group,
    open_group,
    pyramid_from_group,
)
from napari_m2mrf.io.pyramid import LabelPyramid, Pyramid
from napari_m2mrf.io.pyramid_build import (
    DEFAULT_CHUNK,
    build_pyramid,
    create_level_arrays,
    level_count,
    update_region,
)
from napari_m2mrf.io.zarr_arrays import create_array
from napari_m2mrf.jobs import CancelToken, ProgressCallback

logger = logging.getLogger(__name__)

WORKSPACE_SUFFIX = ".m2mrf.zarr"
WORKSPACE_VERSION = 1
PHOTOGRAPH = "photograph"  # what a workspace was made from (``attrs["m2mrf"]["made_from"]``)
SLIDE = "slide"


def workspace_path_for(source: str | os.PathLike[str]) -> Path:
    """``<name>.m2mrf.zarr`` next to ``source`` if that folder is writable, else in the user cache."""
    source = Path(source).resolve()
    stem = source.name.split(".")[0] or source.name
    if os.access(source.parent, os.W_OK):
        return source.parent / f"{stem}{WORKSPACE_SUFFIX}"
    from napari_m2mrf.cache import cache_dir

    digest = hashlib.sha1(str(source).encode()).hexdigest()[:10]
    return cache_dir("workspaces") / f"{stem}-{digest}{WORKSPACE_SUFFIX}"


class Workspace:
    """An open workspace store (see the module docstring for its layout)."""

    def __init__(self, path: Path, group: Any) -> None:
        self.path = path
        self.group = group
        self.version = "0.5" if group.metadata.zarr_format == 3 else "0.4"

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        source: str | os.PathLike[str] | None = None,
        ngff_version: str = ngff.DEFAULT_VERSION,
    ) -> Workspace:
        """A new empty workspace at ``path`` (an existing one there is kept and opened instead)."""
        path = Path(path)
        if path.exists():
            logger.info("%s: workspace exists; resuming it", path)
            return cls.open(path)
        if ngff_version not in ngff.WRITE_VERSIONS:
            raise UserError(f"NGFF version {ngff_version!r} is not supported; choose one of {ngff.WRITE_VERSIONS}")
        import zarr

        with output_store(path):
            if path.exists():  # made by another writer while we waited for nothing: open it
                return cls.open(path)
            tmp = temporary_sibling(path)
            try:
                group = zarr.open_group(str(tmp), mode="w", zarr_format=ngff.zarr_format_for(ngff_version))
                info: dict[str, Any] = {"workspace": WORKSPACE_VERSION, "created": _now()}
                if source is not None:
                    info["source"] = str(Path(source).resolve())
                group.attrs[COMPLETE_KEY] = info
                replace(tmp, path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        logger.info("%s: created workspace (NGFF %s)", path, ngff_version)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r+") -> Workspace:
        """The existing workspace at ``path``; ``UserError`` if it is missing or not a workspace."""
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"{path}: no such workspace")
        group = open_group(path, mode=mode)
        if "workspace" not in (group.attrs.get(COMPLETE_KEY) or {}):
            raise UserError(f"{path}: a zarr store but not a napari-m2mrf workspace")
        logger.debug("%s: opened workspace (%s)", path, mode)
        return cls(path, group)

    @classmethod
    def for_source(cls, source: str | os.PathLike[str], path: str | os.PathLike[str] | None = None) -> Workspace:
        """Open or create the workspace of ``source`` (at ``path`` or :func:`workspace_path_for`)."""
        path = Path(path) if path is not None else workspace_path_for(source)
        return cls.open(path) if path.exists() else cls.create(path, source=source)

    @staticmethod
    def is_workspace(path: str | os.PathLike[str]) -> bool:
        """True if ``path`` is a workspace folder (cheap: reads the root metadata only)."""
        path = Path(path)
        if not path.is_dir():
            return False
        try:
            return "workspace" in (open_group(path).attrs.get(COMPLETE_KEY) or {})
        except UserError:
            return False

    # -- attributes and provenance ------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        """The workspace's own attributes (version, source, provenance, completion)."""
        return dict(self.group.attrs.get(COMPLETE_KEY) or {})

    def _update_info(self, **fields: Any) -> None:
        with output_lock(self.path):
            self.group.attrs[COMPLETE_KEY] = {**self.info, **fields}

    @property
    def source(self) -> Path | None:
        """The file the workspace was made for, if any."""
        source = self.info.get("source")
        return Path(source) if source else None

    @property
    def provenance(self) -> dict[str, Any]:
        """What produced the workspace's results: model, variant, checkpoint sha256, parameters, time."""
        return dict(self.info.get("provenance") or {})

    def record_provenance(self, **fields: Any) -> None:
        """Merge ``fields`` (JSON-serialisable) into the provenance, stamping the UTC time."""
        self._update_info(provenance={**self.provenance, **fields, "time": _now()})

    def record_made_from(self, kind: str, image_name: str | None = None) -> None:
        """Record what the workspace was made from (:data:`PHOTOGRAPH` or :data:`SLIDE`) and the name the
        image had in the viewer, so that reopening shows the same layers."""
        if kind not in (PHOTOGRAPH, SLIDE):
            raise ValueError(f"made_from must be {PHOTOGRAPH!r} or {SLIDE!r}, not {kind!r}")
        fields: dict[str, Any] = {"made_from": kind}
        if image_name:
            fields["image_name"] = str(image_name)
        if any(self.info.get(key) != value for key, value in fields.items()):
            self._update_info(**fields)

    @property
    def made_from(self) -> str:
        """``"photograph"`` (a fundus photograph: reopened as single-scale, editable layers) or ``"slide"``.

        Read from the workspace's own record (``made_from``, written when fundus results are saved);
        a workspace written before that record existed is judged by what it holds: a slide run leaves
        sampling points, a deformed-downsampling provenance and a probability pyramid, a fundus run
        (Correct's save, ``predict``) leaves ``prediction``/``corrected`` labels and at most one
        single-array probability map. A workspace holding only an image is a slide's (a pyramid built
        for a large flat image).
        """
        recorded = self.info.get("made_from")
        if recorded in (PHOTOGRAPH, SLIDE):
            return recorded
        if "sampling" in self.group or self.provenance.get("kind") == "deformed downsampling":
            return SLIDE
        import zarr

        if "probabilities" in self.group and isinstance(self.group["probabilities"], zarr.Group):
            return SLIDE
        try:
            fundus_labels = {"prediction", "corrected"} & set(self.label_names())
        except UserError:
            return SLIDE
        if not fundus_labels or not self.has_image:
            return SLIDE
        from napari_m2mrf.io.formats import FUNDUS_MAX_PIXELS

        _, height, width = self.image.shape
        return PHOTOGRAPH if height * width <= FUNDUS_MAX_PIXELS else SLIDE

    @property
    def image_name(self) -> str:
        """The name the image had in the viewer (recorded on save), else the workspace's file name."""
        name = self.info.get("image_name")
        if name:
            return str(name)
        return self.path.name[: -len(WORKSPACE_SUFFIX)] if self.path.name.endswith(WORKSPACE_SUFFIX) else self.path.stem

    # -- the image ----------------------------------------------------------------------------

    @property
    def has_image(self) -> bool:
        """True when the store holds a complete image pyramid of its own."""
        _, metadata = ngff.ome_attributes(self.group.attrs.asdict())
        return "multiscales" in metadata and bool(self.info.get("complete"))

    @property
    def image(self) -> Pyramid:
        """The image pyramid: the store's own copy, else the source file read lazily."""
        if self.has_image:
            return pyramid_from_group(self.group, self.path)
        if self.source is not None:
            from napari_m2mrf.io.slides import open_pyramid

            return open_pyramid(self.source)
        raise UserError(f"{self.path}: the workspace holds no image and names no source file")

    def write_image(
        self,
        source: Any,
        *,
        pixel_size_um: float | None = None,
        name: str = "image",
        chunk: int = DEFAULT_CHUNK,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        source_id: dict[str, Any] | None = None,
    ) -> Pyramid:
        """Copy level-0 ``source`` ``(C, Y, X)`` uint8 into the store and build its pyramid, block by block.

        Resumable: after an interruption, calling it again continues where it stopped. The image
        is marked complete (and readable by NGFF tools) only at the end. ``source_id``
        (``output_gate.source_identity``) is recorded, and a build interrupted while reading another
        source restarts instead of resuming; leftovers of killed writes (``*.partial``) are removed first.
        """
        if source.ndim != 3:
            raise UserError(f"{self.path}: an image must be (C, Y, X); got shape {tuple(source.shape)}")
        with output_lock(self.path):
            check_tree(self.path, self.path)
            remove_partials(self.path)
            extra = {"source_identity": source_id, "source": source_id["path"]} if source_id else {}
            self._update_info(complete=False, **extra)
            arrays = build_pyramid(
                self.group, source, kind="image", chunk=chunk, progress=progress, cancel=cancel, source_id=source_id
            )
            return self._publish_image(arrays, source, name, pixel_size_um)

    def _publish_image(self, arrays: list[Any], source: Any, name: str, pixel_size_um: float | None) -> Pyramid:
        downsamples = [2.0**k for k in range(len(arrays))]
        entry = ngff.multiscales_entry(name, "cyx", downsamples, pixel_size_um, self.version)
        metadata = {"multiscales": [entry], "omero": ngff.omero_rgb(name, int(source.shape[0]))}
        attrs = dict(self.group.attrs.asdict())
        attrs.pop("ome", None)
        attrs.update(ngff.wrap_attributes(metadata, self.version))
        attrs[COMPLETE_KEY] = {**self.info, "complete": True}
        self.group.attrs.put(attrs)
        return self.image

    # -- labels ----------------------------------------------------------------------------

    def label_names(self) -> list[str]:
        """Names of the label pyramids in ``labels/``."""
        return label_names(self.path)

    def labels(self, name: str) -> LabelPyramid:
        """The label pyramid ``labels/<name>`` (lazy; writable when the workspace was opened ``r+``)."""
        if "labels" not in self.group or name not in self.group["labels"]:
            raise UserError(f"{self.path}: has no labels named {name!r}")
        return label_pyramid_from_group(self.group["labels"][name], self.path / "labels" / name, name)

    @contextmanager
    def new_labels(
        self,
        name: str,
        shape: tuple[int, int],
        *,
        colors: Mapping[int, Sequence[float]],
        names: Mapping[int, str],
        pixel_size_um: float | None = None,
        chunk: int = DEFAULT_CHUNK,
        progress: ProgressCallback | None = None,
    ) -> Iterator[Any]:
        """Write a label map piece by piece, then publish it as ``labels/<name>`` in one rename.

        The pyramid gets as many levels as the workspace's image when the shapes match. Yields
        the level-0 zarr array ``(Y, X)`` uint8 (initially 0) to write regions into; on a
        normal exit the coarser levels are built and the finished pyramid replaces any previous
        ``labels/<name>``. On an exception nothing changes.
        """
        with self._new_label_group(name) as group:
            level0 = create_array(group, "0", tuple(shape), np.uint8, chunk, "yx")
            yield level0
            arrays = build_pyramid(
                group, level0, kind="labels", chunk=chunk, levels=self._matching_levels(shape), progress=progress,
                copy_level0=False,
            )
            self._put_label_metadata(group, name, len(arrays), colors, names, pixel_size_um)

    @contextmanager
    def _new_label_group(self, name: str) -> Iterator[Any]:
        """An empty zarr group that a normal exit publishes as ``labels/<name>`` in one rename (replacing
        any previous one) and lists; on an exception nothing changes. The workspace's lock is held throughout."""
        import zarr

        _check_label_name(self.path, name)
        with output_lock(self.path):
            target = resolve_inside(self.path, "labels", name)
            self._ensure_labels_group()
            remove_partials(self.path / "labels")  # leftovers of killed saves of any labels
            with atomic_path(target) as tmp:
                yield zarr.open_group(str(tmp), mode="w", zarr_format=self.group.metadata.zarr_format)
            self._list_label(name)

    def _put_label_metadata(
        self,
        group: Any,
        name: str,
        levels: int,
        colors: Mapping[int, Sequence[float]],
        names: Mapping[int, str],
        pixel_size_um: float | None,
    ) -> None:
        """NGFF attributes of a label pyramid of ``levels`` levels (each half the last; level 0 of
        ``pixel_size_um`` µm) with its classes' colours and names, marked complete."""
        metadata = {
            "multiscales": [ngff.multiscales_entry(name, "yx", [2.0**k for k in range(levels)], pixel_size_um,
                                                   self.version)],
            "image-label": ngff.image_label(colors, names, self.version),
        }
        group.attrs.put({**ngff.wrap_attributes(metadata, self.version), COMPLETE_KEY: {"complete": True}})

    def label_level_count(self, shape: tuple[int, int], chunk: int = DEFAULT_CHUNK) -> int:
        """How many levels a label pyramid of ``shape`` gets here (the image's count when they cover it)."""
        return self._matching_levels(shape) or level_count(int(shape[0]), int(shape[1]), chunk)

    @contextmanager
    def new_label_levels(
        self,
        name: str,
        shape: tuple[int, int],
        *,
        colors: Mapping[int, Sequence[float]],
        names: Mapping[int, str],
        pixel_size_um: float | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> Iterator[list[Any]]:
        """Like :meth:`new_labels`, but the caller fills every level: yields the zarr arrays of all
        :meth:`label_level_count` levels (level 0 first, each half the last, rounded up; initially 0).

        On a normal exit the pyramid is published as ``labels/<name>`` in one rename (replacing any
        previous one); on an exception (a cancel) nothing changes. The workspace's lock is held
        throughout (other writers of this process wait, another process gets ``OutputLocked``).
        """
        with self._new_label_group(name) as group:
            levels = self.label_level_count(shape, chunk)
            arrays = create_level_arrays(group, tuple(shape), np.uint8, levels, chunk, "yx")
            yield arrays
            self._put_label_metadata(group, name, len(arrays), colors, names, pixel_size_um)

    def _matching_levels(self, shape: tuple[int, int]) -> int | None:
        """The image's level count when labels of ``shape`` cover the image (so both pyramids align)."""
        if not self.has_image:
            return None
        image = self.image
        return len(image.levels) if tuple(image.shape[1:]) == tuple(shape) else None

    def write_labels(
        self,
        name: str,
        labels: Any,
        *,
        colors: Mapping[int, Sequence[float]],
        names: Mapping[int, str],
        pixel_size_um: float | None = None,
        chunk: int = DEFAULT_CHUNK,
        progress: ProgressCallback | None = None,
    ) -> LabelPyramid:
        """Store ``labels`` ``(Y, X)`` (numpy, zarr or dask; read block by block) as ``labels/<name>``, atomically."""
        if labels.ndim != 2:
            raise UserError(f"{self.path}: labels must be (Y, X); got shape {tuple(labels.shape)}")
        dtype = np.dtype(labels.dtype)
        if dtype.kind not in "uib":
            raise UserError(f"{self.path}: labels must be integers; got {dtype}")
        block = 2 * chunk
        with self.new_labels(
            name, tuple(labels.shape), colors=colors, names=names, pixel_size_um=pixel_size_um, chunk=chunk,
            progress=progress,
        ) as level0:
            for y in range(0, labels.shape[0], block):
                for x in range(0, labels.shape[1], block):
                    piece = np.asarray(labels[y : y + block, x : x + block])
                    if piece.size and (piece.min() < 0 or piece.max() > 255):
                        raise UserError(f"{self.path}: label values must be 0..255; got {piece.min()}..{piece.max()}")
                    level0[y : y + block, x : x + block] = piece.astype(np.uint8)
        return self.labels(name)

    def write_labels_region(self, name: str, region: np.ndarray, y0: int, x0: int) -> None:
        """Overwrite ``labels/<name>`` level 0 at ``[y0:y0+h, x0:x0+w]`` with ``region`` and refresh coarser levels."""
        pyramid = self.labels(name)
        height, width = pyramid.shape
        h, w = region.shape
        if y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
            raise UserError(f"{self.path}: region {h}×{w} at ({y0}, {x0}) lies outside labels {height}×{width}")
        with output_lock(self.path):
            check_tree(self.path, self.path / "labels" / name)
            pyramid.levels[0][y0 : y0 + h, x0 : x0 + w] = np.asarray(region, dtype=np.uint8)
            update_region(pyramid.levels, y0, y0 + h, x0, x0 + w, kind="labels")

    def _ensure_labels_group(self) -> None:
        resolve_inside(self.path, "labels")
        if "labels" not in self.group:
            group = self.group.create_group("labels")
            group.attrs.put(ngff.wrap_attributes({"labels": []}, self.version))

    def _list_label(self, name: str) -> None:
        group = self.group["labels"]
        _, metadata = ngff.ome_attributes(group.attrs.asdict())
        listed = [str(n) for n in metadata.get("labels") or []]
        if name not in listed:
            group.attrs.put(ngff.wrap_attributes({**metadata, "labels": [*listed, name]}, self.version))

    # -- probabilities, sampling points, deformation ----------------------------------------------

    def write_probabilities(self, probabilities: np.ndarray, *, downsample: float, class_names: Sequence[str]) -> None:
        """Store per-class maps ``(K, Y, X)`` (float, 0..1) as float16; ``downsample``: level-0 pixels per pixel."""
        probabilities = np.asarray(probabilities)
        if probabilities.ndim != 3 or probabilities.shape[0] != len(class_names):
            raise UserError(
                f"{self.path}: probabilities must be (K, Y, X) with K = {len(class_names)} classes; "
                f"got shape {probabilities.shape}"
            )
        self._write_array_atomic(
            "probabilities", probabilities.astype(np.float16), "kyx",
            {"downsample": float(downsample), "classes": list(class_names)},
        )

    def probabilities(self) -> tuple[Any, float, list[str]]:
        """``(array (K, Y, X) float16, downsample, class names)`` of a fundus run's single map;
        ``UserError`` if none were stored or they are a slide's pyramid (:meth:`probability_pyramid`)."""
        import zarr

        array = self._array("probabilities")
        if isinstance(array, zarr.Group):
            raise UserError(f"{self.path}: the probabilities are a slide pyramid; read them with probability_pyramid()")
        return array, float(array.attrs["downsample"]), list(array.attrs["classes"])

    @contextmanager
    def new_probabilities(
        self,
        shape: tuple[int, int, int],
        *,
        downsample: float,
        class_codes: Sequence[str],
        pixel_size_um: float | None = None,
        chunk: int = DEFAULT_CHUNK,
        progress: ProgressCallback | None = None,
    ) -> Iterator[Any]:
        """Write per-class probability maps piece by piece, then publish the pyramid ``probabilities/`` in one rename.

        ``shape``: ``(K, Y, X)`` of the finest level, one map per entry of ``class_codes``;
        ``downsample``: level-0 image pixels per pixel of that level. Yields its zarr array
        ``(K, Y, X)`` float16 (initially 0; values 0..1) to write regions into; on a normal exit the
        coarser levels are built (2×2 area average) and the pyramid replaces any previous
        ``probabilities``. On an exception nothing changes.
        """
        with self._new_probability_group(shape, class_codes) as group:
            level0 = create_array(group, "0", tuple(shape), np.float16, chunk, "cyx")
            yield level0
            arrays = build_pyramid(group, level0, kind="image", chunk=chunk, progress=progress, copy_level0=False)
            self._put_probability_metadata(group, len(arrays), downsample, class_codes, pixel_size_um)

    @contextmanager
    def new_probability_levels(
        self,
        shape: tuple[int, int, int],
        *,
        downsample: float,
        class_codes: Sequence[str],
        pixel_size_um: float | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> Iterator[list[Any]]:
        """Like :meth:`new_probabilities`, but the caller fills every level: yields the zarr arrays
        ``(K, Y_k, X_k)`` float16 of all levels (``level_count`` of ``shape``; level 0 first, each half
        the last). On a normal exit the pyramid replaces ``probabilities`` in one rename; on an
        exception nothing changes."""
        with self._new_probability_group(shape, class_codes) as group:
            levels = probability_level_count(shape, chunk)
            arrays = create_level_arrays(group, tuple(shape), np.float16, levels, chunk, "cyx")
            yield arrays
            self._put_probability_metadata(group, levels, downsample, class_codes, pixel_size_um)

    @contextmanager
    def _new_probability_group(self, shape: tuple[int, int, int], class_codes: Sequence[str]) -> Iterator[Any]:
        """An empty zarr group that a normal exit publishes as ``probabilities`` in one rename (replacing any
        previous one); on an exception nothing changes. ``shape`` ``(K, Y, X)`` must have one map per class
        code. The workspace's lock is held throughout."""
        import zarr

        if len(shape) != 3 or shape[0] != len(class_codes):
            raise UserError(
                f"{self.path}: probabilities must be (K, Y, X) with K = {len(class_codes)} classes; got shape {shape}"
            )
        with output_lock(self.path), atomic_path(resolve_inside(self.path, "probabilities")) as tmp:
            yield zarr.open_group(str(tmp), mode="w", zarr_format=self.group.metadata.zarr_format)

    def _put_probability_metadata(
        self, group: Any, levels: int, downsample: float, class_codes: Sequence[str], pixel_size_um: float | None
    ) -> None:
        """NGFF attributes of a probability pyramid of ``levels`` levels (each half the last) whose level 0
        has ``downsample`` level-0 image pixels per pixel (of ``pixel_size_um`` µm), marked complete with
        its downsample and class codes."""
        base_um = pixel_size_um * downsample if pixel_size_um is not None else None
        entry = ngff.multiscales_entry("probabilities", "cyx", [2.0**k for k in range(levels)], base_um, self.version)
        info = {"complete": True, "downsample": float(downsample), "classes": list(class_codes)}
        group.attrs.put({**ngff.wrap_attributes({"multiscales": [entry]}, self.version), COMPLETE_KEY: info})

    def probability_pyramid(self) -> tuple[Pyramid, float, list[str]]:
        """``(pyramid of (K, Y_k, X_k) float16 levels, level-0 pixels per pixel of its level 0, class codes)``.

        ``UserError`` when the workspace holds no probability pyramid (none, or a fundus run's single map).
        """
        import zarr

        group = self._array("probabilities")
        info = dict(group.attrs.get(COMPLETE_KEY) or {}) if isinstance(group, zarr.Group) else {}
        if "downsample" not in info:
            raise UserError(f"{self.path}: the workspace holds no probability pyramid")
        pyramid = pyramid_from_group(group, self.path / "probabilities")
        return pyramid, float(info["downsample"]), list(info["classes"])

    def write_sampling_points(self, points: np.ndarray) -> None:
        """Store sampling locations ``(N, 2)`` in level-0 pixels ``(y, x)`` as float32."""
        points = np.asarray(points, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != 2:
            raise UserError(f"{self.path}: sampling points must be (N, 2); got shape {points.shape}")
        self._write_array_atomic("sampling/points", points, "nd", {"units": "level-0 pixels (y, x)"})

    def sampling_points(self) -> np.ndarray:
        """The stored sampling locations ``(N, 2)`` float32 in level-0 pixels ``(y, x)``."""
        return np.asarray(self._array("sampling/points")[...])

    def write_deformation(self, density: np.ndarray, *, downsample: float, source: dict[str, Any] | None = None) -> None:
        """Store the sampling-density map ``(Y, X)`` float32; ``downsample``: level-0 pixels per map pixel;
        ``source``: where the map came from (``{"source": "learned"}``, ``"edited by the user"`` with the edits,
        ``"file"`` …), kept in the array's attributes (:meth:`deformation_source`)."""
        density = np.asarray(density, dtype=np.float32)
        if density.ndim != 2:
            raise UserError(f"{self.path}: a deformation map must be (Y, X); got shape {density.shape}")
        attrs = {"downsample": float(downsample), **({"density": source} if source else {})}
        self._write_array_atomic("sampling/deformation", density, "yx", attrs)

    def deformation_source(self) -> dict[str, Any]:
        """Where the stored deformation map came from (``{}`` for a map stored without it)."""
        return dict(self._array("sampling/deformation").attrs.get("density") or {})

    def deformation(self) -> tuple[np.ndarray, float]:
        """``(density (Y, X) float32, downsample)``."""
        array = self._array("sampling/deformation")
        return np.asarray(array[...]), float(array.attrs["downsample"])

    def _array(self, key: str) -> Any:
        try:
            return self.group[key]
        except KeyError:
            raise UserError(f"{self.path}: the workspace holds no '{key}' yet") from None

    def _write_array_atomic(self, key: str, data: np.ndarray, axes: str, attrs: dict[str, Any]) -> None:
        """Write ``data`` as array ``key`` aside in a scratch store, then rename it into place."""
        with output_lock(self.path):
            self._write_array_locked(key, data, axes, attrs)

    def _write_array_locked(self, key: str, data: np.ndarray, axes: str, attrs: dict[str, Any]) -> None:
        import zarr

        target = resolve_inside(self.path, *key.split("/"))
        parent_key = key.rsplit("/", 1)[0] if "/" in key else ""
        if parent_key and parent_key not in self.group:
            self.group.create_group(parent_key)
        remove_stale_siblings(target)
        scratch = temporary_sibling(target)
        try:
            group = zarr.open_group(str(scratch), mode="w", zarr_format=self.group.metadata.zarr_format)
            chunks = (min(len(data), 1 << 16), 2) if axes == "nd" else DEFAULT_CHUNK
            array = create_array(group, "data", data.shape, data.dtype, chunks, axes)
            array[...] = data
            array.attrs.put(attrs)
            replace(scratch / "data", target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def probability_level_count(shape: tuple[int, ...], chunk: int = DEFAULT_CHUNK) -> int:
    """Levels of a probability pyramid whose finest level is ``(K, Y, X)`` (as :meth:`Workspace.new_probabilities`)."""
    return level_count(int(shape[-2]), int(shape[-1]), chunk)


def _check_label_name(path: Path, name: str) -> None:
    if not name or "/" in name or name.startswith(".") or name.startswith("__"):
        raise UserError(f"{path}: {name!r} is not a valid labels name")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
