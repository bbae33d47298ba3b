"""The image as the models read it, made once when a dataset is built, and read back fast.

``prepare_model_image`` runs the steps of ``MicrographImageProcessor`` (through the one module that
reads micrographs, ``emvision.processing.micrograph``): the working array (16-bit data scaled by its
bit depth, alpha composited over black, palettes resolved) -> the information bar detected and cropped
off -> resized to ``MODEL_IMAGE_SIZE`` x ``MODEL_IMAGE_SIZE`` (bicubic, antialiased, aspect ratio not
kept, as the processor does). It stops before rescaling and normalising: the training collators do
that (one multiply and one add per pixel). For 8-bit files the collator's ``pixel_values`` therefore
equal the processor's on the original file bit for bit; for 16-bit or float files the stored image is
the processor's resized array rounded to whole grey levels (at most 0.5 level, i.e. 1/255 after
normalisation to [-1, 1]).

The stored mode is ``L`` when the micrograph is gray (every pixel R = G = B after resizing, which
includes grayscale files) and ``RGB`` otherwise, so both give the processor's values exactly;
``color="L"`` stores the luma of colour files instead (smaller, but then no longer what the processor
gives for the colour original).

Images are stored as PNG without compression and without row filters (``encode_png``): SEM noise
leaves deflate little to find (a 224x224 micrograph: 50 kB raw, ~37 kB at PNG's best), and reading one
back is then a copy (``decode_image``, ~20x faster than Pillow's PNG decoder). Any PNG or JPEG is
still read correctly (Pillow), only more slowly.

Numpy, PIL and zlib only: data code imports this without torch or transformers.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import PIL.Image
import PIL.ImageOps

from emvision.processing.micrograph import detect_info_bar_in_array, resize_array, to_working_array

from .schema import MODEL_IMAGE_SIZE

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (gray, RGB)

# The scale bar: the longest horizontal line of "ink" (>= 64 grey levels from the bar's background) in
# the information bar, at least this share of the image width and at most this share (longer lines are
# frames and rules), and no thicker than this share of the bar's height (filled boxes: logos).
_SCALE_BAR_MIN_FRACTION = 0.03
_SCALE_BAR_MAX_FRACTION = 0.6
_SCALE_BAR_MAX_THICKNESS = 0.4
_INK_DELTA = 64


@dataclass(frozen=True)
class ModelImage:
    """One micrograph as stored: ``pixels`` (HxW or HxWx3 uint8) and where they came from in the original."""

    pixels: np.ndarray
    width: int  # the original's size (EXIF orientation applied, as the processor reads a file)
    height: int
    crop_box: tuple[int, int, int, int]  # (left, top, right, bottom) of the original that ``pixels`` shows
    scale_bar_px: float | None  # the scale bar's length in original pixels, when one was found in the bar

    @property
    def mode(self) -> str:
        return "L" if self.pixels.ndim == 2 else "RGB"

    @property
    def info_bar_row(self) -> int | None:
        """The first row of the information bar in the original, None when there is none."""
        return self.crop_box[3] if self.crop_box[3] < self.height else None


def open_image_bytes(data: bytes) -> PIL.Image.Image:
    """Decode a file's bytes as ``MicrographImageProcessor`` decodes a path: fully loaded, EXIF orientation applied."""
    image = PIL.Image.open(io.BytesIO(data))
    image.load()
    return PIL.ImageOps.exif_transpose(image)


def prepare_model_image(image, size: int = MODEL_IMAGE_SIZE, color: str = "auto", measure_scale_bar: bool = True) -> ModelImage:
    """A micrograph (PIL image, array, or anything ``to_working_array`` takes) as the models read it.

    ``size`` 0 keeps the cropped image at its own size (the collators then resize it at every read).
    ``color``: ``auto`` (``L`` when gray, else ``RGB``), ``L`` (luma) or ``RGB``.
    """
    if color not in ("auto", "L", "RGB"):
        raise ValueError(f"color must be 'auto', 'L' or 'RGB', got {color!r}")
    array = to_working_array(image)
    height, width = array.shape[:2]
    bar_row = detect_info_bar_in_array(array)
    cropped = array if bar_row is None else array[:bar_row]
    scale_bar = find_scale_bar(array, bar_row) if measure_scale_bar and bar_row is not None else None
    resized = resize_array(cropped, size, size) if size else cropped
    if resized.dtype != np.uint8:  # 16-bit and float data: the processor's float values, rounded
        resized = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    if resized.ndim == 3:
        if color == "L":
            resized = np.asarray(PIL.Image.fromarray(np.ascontiguousarray(resized)).convert("L"))
        elif color == "auto" and _is_gray(resized):
            resized = resized[..., 0]
    if color == "RGB" and resized.ndim == 2:
        resized = np.repeat(resized[..., None], 3, axis=2)
    crop_box = (0, 0, width, height if bar_row is None else bar_row)
    return ModelImage(np.ascontiguousarray(resized), width, height, crop_box, scale_bar)


def _is_gray(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def find_scale_bar(array: np.ndarray, bar_row: int | None) -> float | None:
    """The scale bar's length in pixels: the longest horizontal ink line inside the information bar.

    No OCR: what the label says (e.g. "10 µm") is not read. Only the rendered bar's rows count (mostly its
    background level). A line is a run of ink (>= 64 grey levels from the bar's background) repeated in
    adjacent rows with the same ends (+-2 px); lines shorter than
    3% of the width (text strokes) or longer than 60% (frames, rules), and filled boxes taller than 40%
    of the bar (logos) do not count. None when no line is left.
    """
    if bar_row is None or bar_row >= array.shape[0]:
        return None
    region = array[bar_row:]
    if region.ndim == 3:
        region = np.asarray(PIL.Image.fromarray(np.clip(region, 0, 255).astype(np.uint8)).convert("L"))
    elif region.dtype != np.uint8:
        region = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    background = int(np.bincount(region.ravel(), minlength=256).argmax())
    # only the rendered bar: some microscopes leave a strip of micrograph below it, whose rows are not
    # mostly the bar's background
    rendered = (np.abs(region.astype(np.int16) - background) <= 8).mean(axis=1) >= 0.5
    if not rendered.any():
        return None
    first = int(np.argmax(rendered))
    last = first + (int(np.argmin(rendered[first:])) if not rendered[first:].all() else len(rendered) - first)
    region = region[first:last]
    bar_height, width = region.shape
    ink = np.abs(region.astype(np.int16) - background) >= _INK_DELTA
    shortest, longest = max(4, _SCALE_BAR_MIN_FRACTION * width), _SCALE_BAR_MAX_FRACTION * width
    lines: list[list[int]] = []  # [start, stop, first row, last row] of runs continued row after row
    for row in range(bar_height):
        padded = np.concatenate(([0], ink[row].astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(padded))
        for start, stop in zip(edges[::2].tolist(), edges[1::2].tolist()):
            if not shortest <= stop - start <= longest:
                continue
            for line in lines:
                if line[3] == row - 1 and abs(line[0] - start) <= 2 and abs(line[1] - stop) <= 2:
                    line[3] = row
                    break
            else:
                lines.append([start, stop, row, row])
    lengths = [stop - start for start, stop, first, last in lines if last - first + 1 <= max(2, _SCALE_BAR_MAX_THICKNESS * bar_height)]
    return float(max(lengths)) if lengths else None


# ---------------------------------------------------------------------------------------------
# Stored bytes
# ---------------------------------------------------------------------------------------------


def encode_png(pixels: np.ndarray, compress_level: int = 0) -> bytes:
    """An 8-bit gray (HxW) or RGB (HxWx3) array as a PNG with no row filters (deflate level 0 by default)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"expected an HxW or HxWx3 uint8 array, got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    rows = np.zeros((height, 1 + width * channels), np.uint8)  # filter byte 0 (None) on every row
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()  # 4:4:4 keeps the colour of thin annotation text sharp
    PIL.Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Stored image bytes -> HxW (gray) or HxWx3 uint8 array.

    PNGs written by :func:`encode_png` (8-bit gray or RGB, no row filters) are read with one inflate and
    a reshape; anything else goes through Pillow and ``to_working_array``.
    """
    pixels = _decode_unfiltered_png(data)
    if pixels is not None:
        return pixels
    array = to_working_array(PIL.Image.open(io.BytesIO(data)))
    return array if array.dtype == np.uint8 else np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _decode_unfiltered_png(data: bytes) -> np.ndarray | None:
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    channels = {0: 1, 2: 3}.get(color_type)
    if depth != 8 or channels is None or interlace:
        return None
    position, compressed = 8, []
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            compressed.append(data[position + 8 : position + 8 + length])
        elif kind == b"IEND":
            break
        position += 12 + length
    try:
        raw = zlib.decompress(b"".join(compressed))
    except zlib.error:
        return None
    stride = 1 + width * channels
    if len(raw) != height * stride:
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride)
    if rows[:, 0].any():  # row filters: Pillow undoes them
        return None
    pixels = rows[:, 1:]
    return pixels if channels == 1 else pixels.reshape(height, width, 3)
