"""Small, valid scanner slides in the vendor formats OpenSlide reads, written here (no stored blobs).

Each ``write_*`` function writes one slide of a known smooth pattern (JPEG-friendly) into a folder
and returns a :class:`GeneratedSlide`: the path to open, the pixels written for every level, where
they sit in OpenSlide's level 0, the level-0 pixel size and the decoding tolerance. What each file
holds follows the format descriptions on openslide.org/formats (what OpenSlide's vendor reader
checks) and the TIFF tag numbers these vendors use:

* Aperio SVS with JPEG 2000 tiles: compression 33003 (YCbCr components in the codestream, no
  multi-component transform) or 33005 (RGB), ``Aperio Image Library`` ImageDescription with ``MPP``.
* Leica SCN: BigTIFF whose first ImageDescription is the ``scn`` XML (namespace
  ``http://www.leica-microsystems.com/scn/2010/10/01``): a collection (size in nm) holding a macro
  image at (0, 0) and a main image placed at an offset, each ``dimension`` naming its TIFF directory.
  OpenSlide's level 0 is the whole collection; the main image's TIFF resolution gives the µm/pixel.
* Ventana BIF: BigTIFF; the first directory (``Label_Image``) carries the XMP (tag 700) ``iScan``
  element with ``ScanRes`` (µm/pixel) and ``Magnification``; levels are directories described
  ``level=N mag=M quality=Q``; a ``Thumbnail`` directory.
* Hamamatsu NDPI: TIFF with the private tags 65420 (file format), 65421 (source lens; -1 for the
  macro), 65422-65424 (offsets from the slide centre, focal plane); each level one 4:2:2 JPEG strip
  with restart markers every ``RESTART_BLOCKS`` MCUs (OpenSlide reads a tile as the MCUs between two
  markers), their starts in tag 65426 (McuStarts, bytes from the strip start), the µm/pixel in the
  TIFF resolution (centimetre unit). OpenSlide 4.0.1 failed to decode the tiles of 4:2:0 strips
  here ("found marker 0xd9 instead of RST0"). Directories link with classic 32-bit offsets, so
  tifffile, which reads ``.ndpi`` files with NDPI's 64-bit links, cannot parse these files.
* 3DHISTECH MIRAX: ``NAME.mrxs`` (any non-TIFF content) beside a folder ``NAME`` holding
  ``Slidedat.ini`` (GENERAL: slide id, image grid; HIERARCHICAL: the index file, one ``Slide zoom
  level`` value per level with its section, the ``VIMSLIDE_POSITION_BUFFER`` non-hierarchical
  value; DATAFILE: the data files; per level: µm/pixel, JPEG, fill colour, image size and
  ``IMAGE_CONCAT_FACTOR`` = 1, each level's images covering 2×2 of the previous level's; the fill
  colour is OpenSlide's background, shown where a level-0 image is absent), ``Index.dat``
  (version string and slide id, then little-endian int32: the hierarchical and non-hierarchical
  root tables, each record a linked list of pages ``count, next, items``; a level's items are
  ``image index, offset, length, data file``) and ``Data0000.dat`` (the JPEG images, then the
  camera positions: ``flag, x, y`` per image, int8 + 2 × int32).

``python tests/slide_formats.py FOLDER`` writes one slide of each format into FOLDER.
"""

from __future__ import annotations

import base64
import io
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

TILE = 256
RESTART_BLOCKS = 8  # NDPI: MCUs between restart markers (8 MCUs of 16×8 pixels: 128×8 tiles; divides every row)
SCN_NAMESPACE = "http://www.leica-microsystems.com/scn/2010/10/01"


@dataclass(frozen=True)
class GeneratedSlide:
    """A written slide: ``levels`` as written (``(Y, X, 3)`` uint8), placed at ``offsets`` (y, x) of each level.

    ``level_shapes`` are OpenSlide's level sizes ``(Y, X)`` (larger than the written image where the
    format composes a canvas, as Leica's collection does); outside the image OpenSlide shows the
    background (white). ``tolerance``: the largest mean absolute difference a lossy codec may add.
    """

    path: Path
    vendor: str
    levels: list[np.ndarray]
    level_shapes: list[tuple[int, int]]
    pixel_size_um: float
    offsets: list[tuple[int, int]] = field(default_factory=list)
    tolerance: float = 0.0

    def offset(self, level: int) -> tuple[int, int]:
        return self.offsets[level] if self.offsets else (0, 0)


def pattern(height: int, width: int) -> np.ndarray:
    """A smooth RGB pattern (gradients, a soft-edged disc, waves) as ``(Y, X, 3)`` uint8: distinct everywhere, JPEG-friendly."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 40 + 180 * x / max(width - 1, 1)
    green = 60 + 150 * y / max(height - 1, 1)
    radius = np.hypot(y - height * 0.4, x - width * 0.6) / (min(height, width) * 0.25)
    disc = np.clip((1.2 - radius) / 0.4, 0.0, 1.0)  # 1 inside, a soft edge, 0 outside
    blue = 50.0 + 30.0 * np.sin(x / 23.0) * np.cos(y / 17.0) + 150.0 * disc
    return np.clip(np.rint(np.dstack([red, green, blue])), 0, 255).astype(np.uint8)


def halve(image: np.ndarray) -> np.ndarray:
    """The next pyramid level: 2×2 means (edges cropped to even size)."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:h, :w].astype(np.float32).reshape(h // 2, 2, w // 2, 2, 3)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def _pyramid(height: int, width: int, count: int) -> list[np.ndarray]:
    levels = [pattern(height, width)]
    while len(levels) < count:
        levels.append(halve(levels[-1]))
    return levels


def _per_cm(pixel_size_um: float) -> tuple[float, float]:
    return (1e4 / pixel_size_um,) * 2


# -- Aperio SVS, JPEG 2000 -------------------------------------------------------------------------


def _ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 RGB -> YCbCr (what Aperio's 33003 codestreams hold)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.clip(np.rint(np.dstack([luma, cb, cr])), 0, 255).astype(np.uint8)


def _jp2k_tiles(image: np.ndarray, ycbcr: bool) -> Iterator[bytes]:
    import imagecodecs

    for row in range(0, image.shape[0], TILE):
        for col in range(0, image.shape[1], TILE):
            tile = np.zeros((TILE, TILE, 3), np.uint8)
            part = image[row : row + TILE, col : col + TILE]
            tile[: part.shape[0], : part.shape[1]] = part
            data = _ycbcr(tile) if ycbcr else tile
            yield imagecodecs.jpeg2k_encode(data, codecformat="J2K", mct=False, reversible=True)


def write_aperio_jp2k(folder: Path, compression: int = 33003, pixel_size_um: float = 0.5) -> GeneratedSlide:
    """An SVS with JPEG 2000 tiles (33003 YCbCr or 33005 RGB), three levels (the last downsampled by 3), a thumbnail."""
    base = pattern(600, 700)
    levels = [base, halve(base), base[1::3, 1::3].copy()]  # 1, 2, 3: a non-power-of-two level
    path = folder / f"aperio_{compression}.svs"
    height, width = base.shape[:2]
    description = (
        f"Aperio Image Library v12.0.15\r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) J2K/KDU Q=70"
        f"|AppMag = 20|MPP = {pixel_size_um}"
    )
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            text = description if index == 0 else f"Aperio Image Library v12.0.15\r\nlevel {index}"
            tif.write(_jp2k_tiles(level, compression == 33003), shape=level.shape, dtype=np.uint8, tile=(TILE, TILE),
                      photometric="rgb", compression=compression, description=text, metadata=None)
            if index == 0:
                tif.write(level[::4, ::4].copy(), photometric="rgb", description="Aperio Image Library thumbnail", metadata=None)
    return GeneratedSlide(path, "aperio", levels, [lv.shape[:2] for lv in levels], pixel_size_um, tolerance=1.0)


# -- Leica SCN ------------------------------------------------------------------------------------


def _scn_image(name: str, dims: list[tuple[int, int, int]], size_nm: tuple[int, int], offset_nm: tuple[int, int]) -> str:
    """One ``image`` element: ``dims`` are (width, height, TIFF directory) per resolution."""
    dimensions = "".join(f'<dimension sizeX="{w}" sizeY="{h}" r="{r}" ifd="{ifd}"/>' for r, (w, h, ifd) in enumerate(dims))
    return (
        f'<image name="{name}" uuid="urn:uuid:{name}"><creationDate>2026-01-01T00:00:00.00Z</creationDate>'
        '<device model="Leica SCN400;Leica SCN" version="1.5.1"/>'
        f'<pixels sizeX="{dims[0][0]}" sizeY="{dims[0][1]}">{dimensions}</pixels>'
        f'<view sizeX="{size_nm[0]}" sizeY="{size_nm[1]}" offsetX="{offset_nm[0]}" offsetY="{offset_nm[1]}" spacingZ="0"/>'
        "<scanSettings><objectiveSettings><objective>20</objective></objectiveSettings>"
        "<illuminationSettings><numericalAperture>0.4</numericalAperture>"
        "<illuminationSource>brightfield</illuminationSource></illuminationSettings></scanSettings></image>"
    )


def write_leica_scn(folder: Path, pixel_size_um: float = 0.5) -> GeneratedSlide:
    """A Leica SCN: a macro image and a two-level main image placed at (32, 48) in a 680×820 collection."""
    levels = _pyramid(600, 700, 2)
    canvas, offset = (680, 820), (32, 48)  # level-0 pixels (Y, X)
    nm = pixel_size_um * 1000
    macro_shape = (68, 82)
    macro = np.full((*macro_shape, 3), 225, np.uint8)
    collection_nm = (int(canvas[1] * nm), int(canvas[0] * nm))
    main_dims = [(lv.shape[1], lv.shape[0], 1 + k) for k, lv in enumerate(levels)]
    xml = (
        f'<?xml version="1.0" encoding="utf-8"?><scn xmlns="{SCN_NAMESPACE}">'
        f'<collection name="generated" uuid="urn:uuid:collection" sizeX="{collection_nm[0]}" sizeY="{collection_nm[1]}">'
        f"<barcode>{base64.b64encode(b'GENERATED-1').decode()}</barcode>"
        + _scn_image("macro", [(macro_shape[1], macro_shape[0], 0)], collection_nm, (0, 0))
        + _scn_image("main", main_dims, (int(levels[0].shape[1] * nm), int(levels[0].shape[0] * nm)),
                     (int(offset[1] * nm), int(offset[0] * nm)))
        + "</collection></scn>"
    )
    path = folder / "leica.scn"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(macro, tile=(64, 64), photometric="rgb", compression="zlib", description=xml, metadata=None)
        for k, level in enumerate(levels):
            tif.write(level, tile=(TILE, TILE), photometric="rgb", compression="jpeg", compressionargs={"level": 95},
                      metadata=None, resolution=_per_cm(pixel_size_um * 2**k), resolutionunit="CENTIMETER")
    shapes = [(canvas[0] >> k, canvas[1] >> k) for k in range(len(levels))]
    offsets = [(offset[0] >> k, offset[1] >> k) for k in range(len(levels))]
    return GeneratedSlide(path, "leica", levels, shapes, pixel_size_um, offsets, tolerance=2.0)


# -- Ventana BIF ----------------------------------------------------------------------------------


def write_ventana_bif(folder: Path, pixel_size_um: float = 0.25) -> GeneratedSlide:
    """A Ventana BIF: label image with the iScan XMP, a thumbnail, three JPEG-tiled levels."""
    levels = _pyramid(512, 768, 3)
    xmp = (
        '<?xml version="1.0" encoding="utf-8"?><Metadata><iScan ScannerModel="VENTANA DP 200" UnitNumber="GEN-1" '
        f'Magnification="40" ScanRes="{pixel_size_um}" BuildVersion="1.0"/></Metadata>'
    ).encode()
    path = folder / "ventana.bif"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(np.full((96, 128, 3), 210, np.uint8), photometric="rgb", description="Label_Image", metadata=None,
                  extratags=[(700, 1, len(xmp), xmp, True)])
        tif.write(levels[-1][::2, ::2].copy(), photometric="rgb", description="Thumbnail", metadata=None)
        for k, level in enumerate(levels):
            tif.write(level, tile=(TILE, TILE), photometric="rgb", compression="jpeg", compressionargs={"level": 95},
                      description=f"level={k} mag={40 >> k} quality=95", metadata=None)
    return GeneratedSlide(path, "ventana", levels, [lv.shape[:2] for lv in levels], pixel_size_um, tolerance=2.0)


# -- Hamamatsu NDPI -------------------------------------------------------------------------------


def _jpeg_with_restarts(image: np.ndarray) -> tuple[bytes, list[int]]:
    """A baseline 4:2:2 JPEG with a restart marker every ``RESTART_BLOCKS`` MCUs, and each interval's start."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, subsampling=1, restart_marker_blocks=RESTART_BLOCKS)
    data = buffer.getvalue()
    sos = data.index(b"\xff\xda")
    starts = [sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")]  # entropy-coded data after the SOS header
    position = starts[0]
    while True:
        found = data.find(b"\xff", position, len(data) - 2)
        if found < 0:
            break
        if 0xD0 <= data[found + 1] <= 0xD7:
            starts.append(found + 2)
        position = found + 2
    return data, starts


def _ndpi_tags(lens: float, mcu_starts: list[int] | None) -> list[tuple]:
    tags = [(65420, "I", 1, 1, True), (65421, "f", 1, lens, True), (65422, "i", 1, 0, True),
            (65423, "i", 1, 0, True), (65424, "i", 1, 0, True)]
    if mcu_starts:
        tags.append((65426, "I", len(mcu_starts), mcu_starts, True))
    return tags


def write_hamamatsu_ndpi(folder: Path, pixel_size_um: float = 0.46) -> GeneratedSlide:
    """A Hamamatsu NDPI: two levels (one restart-marked JPEG strip each) and a macro image (lens -1)."""
    levels = _pyramid(512, 768, 2)
    path = folder / "hamamatsu.ndpi"
    macro = np.full((80, 200, 3), 180, np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for k, (lens, image) in enumerate(((20.0, levels[0]), (10.0, levels[1]), (-1.0, macro))):
            data, starts = _jpeg_with_restarts(image) if lens > 0 else (_jpeg_plain(image), None)
            tif.write(iter([data]), shape=image.shape, dtype=np.uint8, photometric="rgb", compression="jpeg",
                      rowsperstrip=image.shape[0], metadata=None, resolution=_per_cm(pixel_size_um * 2**k),
                      resolutionunit="CENTIMETER", extratags=_ndpi_tags(lens, starts))
    # OpenSlide adds levels of its own below the last stored one (JPEG decoded at 1/2, 1/4, 1/8)
    shapes = [lv.shape[:2] for lv in levels] + [(levels[1].shape[0] >> k, levels[1].shape[1] >> k) for k in (1, 2, 3)]
    return GeneratedSlide(path, "hamamatsu", levels, shapes, pixel_size_um, tolerance=2.0)


def _jpeg_plain(image: np.ndarray, quality: int = 90) -> bytes:
    """A baseline JPEG; at ``quality`` 95 and above without chroma subsampling (sharp colour edges stay sharp)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=0 if quality >= 95 else 2)
    return buffer.getvalue()


# -- 3DHISTECH MIRAX ------------------------------------------------------------------------------

MIRAX_SLIDE_ID = "7d1c5e2a-0000-4000-8000-00000000c0de"


def _int32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def _mirax_index(levels: list[list[tuple[int, int, int, int]]], positions: tuple[int, int]) -> bytes:
    """Index.dat: the root tables, then for each record an empty first page linked to one page of items."""
    index = bytearray(b"01.02" + MIRAX_SLIDE_ID.encode())
    roots = len(index) + 8
    index += _int32(roots, roots + 4 * len(levels)) + bytes(4 * (len(levels) + 1))
    records = [[_int32(*item) for item in items] for items in levels] + [[_int32(0, 0, *positions, 0)]]
    for k, items in enumerate(records):
        first = len(index)
        index[roots + 4 * k : roots + 4 * k + 4] = _int32(first)
        index += _int32(0, first + 8) + _int32(len(items), 0) + b"".join(items)
    return bytes(index)


def _mirax_slidedat(grid: tuple[int, int], side: int, count: int, pixel_size_um: float, fill_bgr: int) -> str:
    lines = ["[GENERAL]", "SLIDE_VERSION=01.02", f"SLIDE_ID={MIRAX_SLIDE_ID}", f"IMAGENUMBER_X={grid[1]}",
             f"IMAGENUMBER_Y={grid[0]}", "OBJECTIVE_MAGNIFICATION=20", "CameraImageDivisionsPerSide=1",
             "[HIERARCHICAL]", "INDEXFILE=Index.dat", "HIER_COUNT=1", "HIER_0_NAME=Slide zoom level", f"HIER_0_COUNT={count}"]
    for k in range(count):
        lines += [f"HIER_0_VAL_{k}=ZoomLevel_{k}", f"HIER_0_VAL_{k}_SECTION=LAYER_0_LEVEL_{k}_SECTION"]
    lines += ["NONHIER_COUNT=1", "NONHIER_0_NAME=VIMSLIDE_POSITION_BUFFER", "NONHIER_0_COUNT=1",
              "NONHIER_0_VAL_0=default", "NONHIER_0_VAL_0_SECTION=NONHIER_0_VAL_0_SECTION",
              "[DATAFILE]", "FILE_COUNT=1", "FILE_0=Data0000.dat"]
    for k in range(count):
        lines += [f"[LAYER_0_LEVEL_{k}_SECTION]", "OVERLAP_X=0", "OVERLAP_Y=0",
                  f"MICROMETER_PER_PIXEL_X={pixel_size_um * 2**k}", f"MICROMETER_PER_PIXEL_Y={pixel_size_um * 2**k}",
                  "IMAGE_FORMAT=JPEG", f"IMAGE_FILL_COLOR_BGR={fill_bgr}", f"DIGITIZER_WIDTH={side}",
                  f"DIGITIZER_HEIGHT={side}", f"IMAGE_CONCAT_FACTOR={min(k, 1)}"]
    return "\n".join([*lines, "[NONHIER_0_VAL_0_SECTION]", ""])


MIRAX_FILL = (230, 236, 245)  # RGB of IMAGE_FILL_COLOR_BGR: OpenSlide's background colour for the slide
MIRAX_EMPTY = (1, 2)  # (row, col) of the level-0 image not stored (no tissue): it shows the fill colour


def write_mirax_mrxs(folder: Path, pixel_size_um: float = 0.25, side: int = 128) -> GeneratedSlide:
    """A MIRAX slide: a 3×4 grid of ``side``² JPEG images, three levels, no overlaps, one level-0 image absent."""
    grid = (3, 4)
    base = pattern(grid[0] * side, grid[1] * side)
    row, col = MIRAX_EMPTY
    base[row * side : (row + 1) * side, col * side : (col + 1) * side] = MIRAX_FILL
    levels = [base, halve(base), halve(halve(base))]
    data = bytearray()
    items: list[list[tuple[int, int, int, int]]] = []
    for k, level in enumerate(levels):
        step, found = 2**k, []
        for row in range(0, grid[0], step):
            for col in range(0, grid[1], step):
                if k == 0 and (row, col) == MIRAX_EMPTY:
                    continue
                image = np.full((side, side, 3), 255, np.uint8)
                part = level[row // step * side : (row // step + 1) * side, col // step * side : (col // step + 1) * side]
                image[: part.shape[0], : part.shape[1]] = part
                encoded = _jpeg_plain(image, quality=95)
                found.append((row * grid[1] + col, len(data), len(encoded), 0))
                data += encoded
        items.append(found)
    positions = b"".join(struct.pack("<bii", 1, col * side, row * side) for row in range(grid[0]) for col in range(grid[1]))
    where = (len(data), len(positions))
    data += positions
    path = folder / "mirax.mrxs"
    path.write_bytes(b"generated MIRAX slide\n")
    companion = folder / "mirax"
    companion.mkdir()
    (companion / "Data0000.dat").write_bytes(bytes(data))
    (companion / "Index.dat").write_bytes(_mirax_index(items, where))
    fill_bgr = MIRAX_FILL[2] << 16 | MIRAX_FILL[1] << 8 | MIRAX_FILL[0]
    (companion / "Slidedat.ini").write_text(_mirax_slidedat(grid, side, len(levels), pixel_size_um, fill_bgr))
    return GeneratedSlide(path, "mirax", levels, [lv.shape[:2] for lv in levels], pixel_size_um, tolerance=2.0)


def damage_tile(path: Path, page: int, tile: int) -> None:
    """Overwrites one stored tile of TIFF directory ``page`` in place: its codec header and first data become 0xFF."""
    with tifffile.TiffFile(path, is_ndpi=False) as tif:  # our NDPI files link directories with classic offsets
        offset, count = tif.pages[page].dataoffsets[tile], tif.pages[page].databytecounts[tile]
    with open(path, "r+b") as file:
        file.seek(offset + 2)
        file.write(b"\xff" * min(int(count) - 4, 400))


def truncate(path: Path, fraction: float) -> Path:
    """Cuts ``path`` to ``fraction`` of its size in place."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


WRITERS: dict[str, Callable[[Path], GeneratedSlide]] = {
    "svs_jp2k_ycbcr": lambda folder: write_aperio_jp2k(folder, 33003),
    "svs_jp2k_rgb": lambda folder: write_aperio_jp2k(folder, 33005),
    "scn": write_leica_scn,
    "bif": write_ventana_bif,
    "ndpi": write_hamamatsu_ndpi,
    "mrxs": write_mirax_mrxs,
}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, write in WRITERS.items():
        print(name, write(out).path)
