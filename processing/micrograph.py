"""Reading electron micrographs as they come from a microscope: decoding, 8-bit scaling, the information bar.

Electron micrographs arrive as 8- or 16-bit grayscale TIFF/PNG, RGB-encoded JPEG, palette GIFs,
RGBA screenshots or raw detector floats, and most carry the information bar (the "data zone": high
voltage, working distance, magnification, scale bar, logo) that the microscope burns into the bottom
of the frame. This module turns any of these into one *working array* (HxW grayscale or HxWx3
colour, uint8, or float32 on the 0..255 scale for deeper data), finds the information bar in it,
and resizes it. It is the one place where emvision reads micrographs: the image processor
(`image_processing_micrograph`) builds the model input from it and the dataset builder stores the
8-bit image it gives (`to_8bit_image`).

Only numpy and PIL are imported, so data code can use it without loading transformers or torch; it
is copied next to `image_processing_micrograph.py` when a model is saved with remote code.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps

__all__ = [
    "MicrographImageError",
    "detect_info_bar",
    "detect_info_bar_in_array",
    "load_micrograph",
    "micrograph_to_array",
    "remove_info_bar",
    "resize_array",
    "scale_to_8bit_range",
    "to_8bit_image",
    "to_working_array",
]

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"


class MicrographImageError(ValueError):
    """A micrograph could not be read: missing, empty, truncated, not an image, or unusable pixels.

    `source` is the file path (or a description of the in-memory input) and `reason` says what was
    wrong; both are in the message.
    """

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


# --------------------------------------------------------------------------------------------
# Loading and conversion
# --------------------------------------------------------------------------------------------


def _describe(image: Any) -> str:
    filename = getattr(image, "filename", None)
    if filename:
        return str(filename)
    if isinstance(image, PIL.Image.Image):
        return f"<PIL image mode={image.mode} size={image.size[0]}x{image.size[1]}>"
    shape = getattr(image, "shape", None)
    if shape is not None:
        return f"<{type(image).__name__} shape={tuple(shape)} dtype={getattr(image, 'dtype', '?')}>"
    return f"<{type(image).__name__}>"


def load_micrograph(source: str | os.PathLike | PIL.Image.Image) -> PIL.Image.Image:
    """Open and fully decode a micrograph file, keeping its native bit depth and mode.

    Unlike `transformers.image_utils.load_image` this does not convert to 8-bit RGB (a 16-bit TIFF
    stays `I;16`), never fetches URLs, and turns every failure into a `MicrographImageError` that
    names the file: missing, a directory, zero bytes, not an image, truncated or corrupt, or over
    PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, left untouched). EXIF orientation
    is applied. Multi-page files (TIFF stacks) give their first page.

    A `PIL.Image.Image` is decoded (if it was lazily opened) and returned as is.
    """
    if isinstance(source, PIL.Image.Image):
        try:
            source.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise MicrographImageError(_describe(source), f"truncated or corrupt image data ({err})") from err
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load_micrograph expects a path or a PIL image, got {type(source).__name__}")

    path = os.fspath(source)
    if path.startswith(("http://", "https://")):
        raise MicrographImageError(path, "URLs are not fetched; download the file and pass its local path")
    if not os.path.exists(path):
        raise MicrographImageError(path, "no such file")
    if os.path.isdir(path):
        raise MicrographImageError(path, "is a directory, not an image file")
    if os.path.getsize(path) == 0:
        raise MicrographImageError(path, "file is empty (0 bytes)")
    try:
        with PIL.Image.open(path) as image:
            image.load()
            PIL.ImageOps.exif_transpose(image, in_place=True)
    except PIL.Image.DecompressionBombError as err:
        raise MicrographImageError(path, f"refused by PIL's decompression-bomb protection ({err})") from err
    except PIL.UnidentifiedImageError as err:
        raise MicrographImageError(path, "not an image file PIL can identify (wrong format or corrupt header)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise MicrographImageError(path, f"truncated or corrupt image data ({err})") from err
    return image


def scale_to_8bit_range(array: np.ndarray, source: str, int32_is_16bit: bool = False) -> np.ndarray:
    """Bring samples onto the 0..255 scale: uint8 unchanged, anything deeper as float32.

    uint16 is scaled by its bit depth (/257, so 65535 -> 255), never clipped. Other integer
    arrays are read by their value range (0..255 as 8-bit, 0..65535 as 16-bit), floats in [0, 1]
    are multiplied by 255 and floats in [0, 255] kept; data outside those ranges (signed or raw
    detector values) is stretched from its own minimum to maximum.
    """
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if dtype.kind == "u" and dtype.itemsize == 2:
        return array.astype(np.float32) * np.float32(1 / 257)
    if dtype.kind in "iu":
        if array.size == 0:
            return array.astype(np.uint8)
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255 and not int32_is_16bit:
            return array.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return array.astype(np.float32) * np.float32(1 / 257)
        return _stretch(array.astype(np.float64), low, high)
    if dtype.kind == "f":
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise MicrographImageError(source, "pixel data contains NaN or infinite values")
        if array.size == 0:
            return array
        low, high = float(array.min()), float(array.max())
        if low >= 0.0 and high <= 1.0:
            return array * np.float32(255)
        if low >= 0.0 and high <= 255.0:
            return array
        return _stretch(array, low, high)
    raise MicrographImageError(source, f"unsupported pixel type {dtype}")


def _stretch(array: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(array.shape, np.float32)
    return ((array - low) * (255.0 / (high - low))).astype(np.float32)


def _composite_alpha(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite over black: a transparent pixel carries no signal, which in a micrograph is black.

    A fully opaque alpha channel is simply dropped.
    """
    if alpha.dtype == np.uint8 and color.dtype == np.uint8:
        if alpha.min() == 255:
            return color
        weights = alpha.astype(np.uint16)
        if color.ndim == 3:
            weights = weights[..., None]
        return ((color.astype(np.uint16) * weights + 127) // 255).astype(np.uint8)
    if float(alpha.min()) >= 255.0:
        return color
    weights = alpha.astype(np.float32) * np.float32(1 / 255)
    if color.ndim == 3:
        weights = weights[..., None]
    return color.astype(np.float32) * weights


def _channel_format(input_data_format: Any) -> str:
    """The channel layout named by a string or by transformers' `ChannelDimension` (a str enum): its value."""
    value = getattr(input_data_format, "value", input_data_format)
    if value not in (CHANNELS_FIRST, CHANNELS_LAST):
        raise ValueError(f"{input_data_format!r} is not a valid ChannelDimension ('{CHANNELS_FIRST}' or '{CHANNELS_LAST}')")
    return value


def _is_torch_tensor(value: Any) -> bool:
    """Whether `value` is a torch tensor, without importing torch (a tensor exists only once torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _channels_last(array: np.ndarray, input_data_format: Any, source: str) -> np.ndarray:
    if array.ndim == 2:
        return array
    if array.ndim != 3:
        raise MicrographImageError(source, f"expected an HxW, HxWxC or CxHxW image, got shape {tuple(array.shape)}")
    if input_data_format is not None:
        if _channel_format(input_data_format) == CHANNELS_FIRST:
            array = np.moveaxis(array, 0, -1)
    elif array.shape[-1] not in (1, 2, 3, 4) and array.shape[0] in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.shape[-1] not in (1, 2, 3, 4):
        raise MicrographImageError(source, f"cannot tell the channel axis of shape {tuple(array.shape)} (1-4 channels)")
    return array


def to_working_array(image: Any, input_data_format: Any = None) -> np.ndarray:
    """Any supported input -> HxW (grayscale) or HxWx3 (colour) array, uint8 or float32 on the 0..255 scale."""
    if isinstance(image, (str, os.PathLike)):
        image = load_micrograph(image)
    source = _describe(image)
    int32_is_16bit = False

    if isinstance(image, PIL.Image.Image):
        try:
            mode = image.mode
            if mode == "P":
                palette = image.getpalette() or []
                colors = np.asarray(palette, dtype=np.uint8).reshape(-1, 3) if palette else np.zeros((0, 3), np.uint8)
                if "transparency" in image.info:
                    image = image.convert("RGBA")
                elif len(colors) and (colors == colors[:, :1]).all():
                    image = image.convert("L")
                else:
                    image = image.convert("RGB")
            elif mode == "PA":
                image = image.convert("RGBA")
            elif mode == "La":
                image = image.convert("LA")
            elif mode == "RGBa":
                image = image.convert("RGBA")
            elif mode == "I":
                int32_is_16bit = True
            elif mode not in ("1", "L", "LA", "RGB", "RGBA", "F") and not mode.startswith("I;16"):
                image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...
            array = np.asarray(image)
        except (OSError, SyntaxError, ValueError) as err:
            raise MicrographImageError(source, f"truncated or corrupt image data ({err})") from err
        if array.dtype.byteorder not in ("=", "|"):
            array = array.astype(array.dtype.newbyteorder("="))
    elif _is_torch_tensor(image):
        tensor = image.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()
        array = tensor.numpy()
        array = _channels_last(array, input_data_format, source)
    elif isinstance(image, np.ndarray):
        array = _channels_last(image, input_data_format, source)
    else:
        raise TypeError(
            f"unsupported image input {type(image).__name__}: expected a path, PIL image, numpy array or torch tensor"
        )

    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if min(array.shape[:2]) < 1:
        raise MicrographImageError(source, f"image has no pixels (shape {tuple(array.shape)})")
    array = scale_to_8bit_range(array, source, int32_is_16bit=int32_is_16bit)
    if array.ndim == 3:
        channels = array.shape[-1]
        if channels == 2:
            array = _composite_alpha(array[..., 0], array[..., 1])
        elif channels == 4:
            array = _composite_alpha(array[..., :3], array[..., 3])
    return array


def _luminance(array: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an HxWx3 working array, same dtype convention (uint8 stays uint8)."""
    if array.ndim == 2:
        return array
    if array.dtype == np.uint8:
        weighted = array.astype(np.uint32) @ np.array([299, 587, 114], np.uint32)
        return ((weighted + 500) // 1000).astype(np.uint8)
    return array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def micrograph_to_array(image: Any, *, grayscale: bool = False) -> np.ndarray:
    """A micrograph (path, PIL image, numpy array or torch tensor) as a float32 array in [0, 1].

    Returns HxW for grayscale sources and HxWx3 for colour ones (alpha composited over black);
    `grayscale=True` always returns HxW (ITU-R 601 luma). 16-bit data keeps its precision.
    """
    array = to_working_array(image)
    if grayscale:
        array = _luminance(array)
    return array.astype(np.float32) * np.float32(1 / 255)


# --------------------------------------------------------------------------------------------
# Information-bar detection
# --------------------------------------------------------------------------------------------
#
# An SEM information bar is rendered, not imaged: a full-width band in the bottom part of the
# frame whose background is one flat level (black, white, sometimes grey) with text, a scale bar
# and logos drawn on it, separated from the micrograph above by a sharp horizontal edge. ZEISS
# data zones add a 1-2 px black frame and may leave a strip of micrograph below the box.
# The detector only looks at per-row grey-level histograms of the bottom `max_bar_fraction`:
#
# 1. rows where more than half the pixels sit within +-8 levels of one value propose a
#    background level B (at most four distinct ones);
# 2. for each B, a band starts at a clean row (>= 60% of it within +-3 levels of B) right below
#    a row that is not, and runs down while rows keep >= 25% of B (text rows);
# 3. the band is a bar when it is tall enough, averages >= 50% of B, holds high-contrast marks
#    (text, scale bar: >= 0.2% of its pixels 64+ levels from B) without being mostly marks,
#    shows B in every eighth of its width, B is near black/white or rendered flat, and the rows
#    just above it are not B (by level, by flatness for a bar as grey as the micrograph, or by a
#    rendered frame line);
# 4. the top-most bar wins; its first row then moves up over text rows that a down-scaled bar
#    may start with, a rendered frame line, and the one blended row at the edge.
#
# The cost is one bincount over the bottom ~40% of the rows and at most 512 sampled columns.

_MAX_BAR_FRACTION = 0.4  # the bar starts within the bottom 40% of the image
_TOLERANCE = 8  # +- grey levels that count as the band's background
_CLEAN = 3  # +- grey levels of a rendered (noise-free) background
_ROW_FRACTION = 0.5  # a band row has at least this share of background pixels on average
_CLEAN_START = 0.6  # the band's first row is at least this clean
_TEXT_ROW_FRACTION = 0.25  # text-heavy rows inside a band still show this much background
_EDGE_CONTRAST = 0.3  # band rows hold this much more background than the rows above
_MARK_DELTA = 64  # a pixel this far from the background is a mark (text, scale bar, logo)
_MIN_MARKS, _MAX_MARKS = 0.002, 0.5
_CHUNKS, _CHUNK_COVERAGE = 8, 0.3
_DARK, _BRIGHT = 24, 231  # backgrounds this dark or bright count as black / white bars
_FLAT_FRACTION = 0.9  # a grey bar's cleanest row has this share within +-2 levels
_FRAME_ROW = 0.9  # a rendered frame line: this share of its row within +-3 levels of one value
_MAX_IN_BETWEEN = 0.4  # a text row of a bar: at most this share 8..64 levels from the background
_MIN_TEXT_INK = 0.02  # ... and at least this share of ink (64+ levels away)
_MAX_COLUMNS = 512
_MIN_SIDE = 24


def _window_counts(cumulative: np.ndarray, center: int, half_width: int) -> np.ndarray:
    """Pixels per row within +-half_width of level `center`, from per-row cumulative histograms (R, 257)."""
    return cumulative[..., min(center + half_width + 1, 256)] - cumulative[..., max(center - half_width, 0)]


def _all_windows(cumulative: np.ndarray, half_width: int) -> np.ndarray:
    """`_window_counts` for every level 0..255 at once (R, 256), by slicing instead of gathering."""
    padded = np.concatenate(
        [np.zeros((len(cumulative), half_width), cumulative.dtype), cumulative, np.repeat(cumulative[:, -1:], half_width, 1)],
        axis=1,
    )
    return padded[:, 2 * half_width + 1 : 2 * half_width + 257] - padded[:, :256]


def _background_candidates(hist: np.ndarray, cumulative: np.ndarray, search_start: int) -> list[int]:
    width = cumulative[0, -1]
    # counts within +-8 of the levels 8..247 (R, 240); a window at level 8 covers 0 as well
    windows = cumulative[search_start:, 2 * _TOLERANCE + 1 :] - cumulative[search_start:, : -2 * _TOLERANCE - 1]
    best_level = windows.argmax(axis=1) + _TOLERANCE
    dominated = np.flatnonzero(windows.max(axis=1) >= _ROW_FRACTION * width)
    if dominated.size == 0:
        return []
    # the exact histogram peak inside each dominated row's best window
    levels = np.clip(best_level[dominated, None] + np.arange(-_TOLERANCE, _TOLERANCE + 1), 0, 255)
    counts_in_window = hist[search_start + dominated[:, None], levels]
    peaks = levels[np.arange(len(levels)), counts_in_window.argmax(axis=1)]
    values, counts = np.unique(peaks, return_counts=True)
    candidates: list[int] = []
    for value in values[np.argsort(-counts, kind="stable")].tolist():
        if all(abs(value - other) > _TOLERANCE for other in candidates):
            candidates.append(value)
        if len(candidates) == 4:
            break
    return candidates


def _bands(level: np.ndarray, clean: np.ndarray, search_start: int, min_height: int) -> list[tuple[int, int]]:
    """(start, stop) of bands: a clean row below an unclean one, extended down over text rows."""
    is_clean = clean >= _CLEAN_START
    starts = np.flatnonzero(is_clean[1:] & ~is_clean[:-1]) + 1
    weak = np.flatnonzero(level < _TEXT_ROW_FRACTION)
    bands = []
    for start in starts[starts >= search_start].tolist():
        after = weak[np.searchsorted(weak, start) :]
        stop = int(after[0]) if after.size else level.size
        if stop - start >= min_height and level[start:stop].mean() >= _ROW_FRACTION:
            bands.append((start, stop))
    return bands


def _is_info_bar(
    rows: np.ndarray,
    cumulative: np.ndarray,
    level: np.ndarray,
    clean: np.ndarray,
    start: int,
    stop: int,
    background: int,
    context: int,
) -> bool:
    # sharp edge: the rows just above (one blended row skipped) are not this background. They are
    # compared with the band's top rows, not its mean, so that a band starting inside a micrograph
    # of the bar's grey level and running into the bar below is rejected.
    if start - 1 - context < 0:
        return False
    above, top = slice(start - 1 - context, start - 1), slice(start, min(start + context, stop))
    differs_in_level = level[above].mean() < _ROW_FRACTION and (
        level[above].mean() <= level[top].mean() - _EDGE_CONTRAST
    )
    differs_in_flatness = clean[above].mean() < _ROW_FRACTION and (
        clean[above].mean() <= clean[top].mean() - _EDGE_CONTRAST
    )
    if not (differs_in_level or differs_in_flatness or _framed(cumulative, start, background, rows.shape[1])):
        return False

    width = rows.shape[1]
    band = cumulative[start:stop]
    total = band[:, -1].sum()
    marks = (total - _window_counts(band, background, _MARK_DELTA).sum()) / total
    if not _MIN_MARKS <= marks <= _MAX_MARKS:
        return False
    if _DARK < background < _BRIGHT:
        # a grey bar is rendered flat: its cleanest row (a margin) sits within +-2 levels
        if (_window_counts(band, background, 2).max() / width) < _FLAT_FRACTION:
            return False
    # full width: the background shows up in every eighth of the band's width
    usable = width - width % _CHUNKS
    is_background = np.abs(rows[start:stop, :usable].astype(np.int16) - background) <= _TOLERANCE
    coverage = is_background.reshape(stop - start, _CHUNKS, -1).mean(axis=(0, 2))
    return bool(coverage.min() >= _CHUNK_COVERAGE)


def _is_frame_row(row_cumulative: np.ndarray, width: int, background: int | None = None) -> bool:
    """A rendered line: >= 90% of the row within +-3 levels of one level (far from `background`)."""
    counts = _all_windows(row_cumulative[None], _CLEAN)[0]
    line_level = int(counts.argmax())
    if counts[line_level] < _FRAME_ROW * width:
        return False
    return background is None or abs(line_level - background) > 3 * _TOLERANCE


def _framed(cumulative: np.ndarray, start: int, background: int, width: int) -> bool:
    """A rendered frame line just above `start` (ZEISS data zones draw one)."""
    return any(_is_frame_row(cumulative[row], width, background) for row in range(max(start - 2, 0), start))


def _extend_over_text(rows: np.ndarray, level: np.ndarray, start: int, stop: int, background: int) -> int:
    """Move a band's start up over text rows a down-scaled bar may begin with (no clean margin).

    A text row holds background and some ink, with few in-between values (antialiased glyph
    edges); a micrograph row holds many, or no ink. At most half the band's height is added.
    """
    limit = max(start - (stop - start) // 2, 1)
    while start > limit and level[start - 1] >= _TEXT_ROW_FRACTION:
        distance = np.abs(rows[start - 1].astype(np.int16) - background)
        ink = (distance >= _MARK_DELTA).mean()
        in_between = ((distance > _TOLERANCE) & (distance < _MARK_DELTA)).mean()
        if ink < _MIN_TEXT_INK or in_between > _MAX_IN_BETWEEN:
            break
        start -= 1
    return start


def _refine_start(rows: np.ndarray, cumulative: np.ndarray, start: int, height: int) -> int:
    """Move the bar's first row up over a rendered frame line and one blended edge row."""
    max_moves = 2 + height // 512
    moves = 0
    while start > 1 and moves < max_moves and _is_frame_row(cumulative[start - 1], rows.shape[1]):
        start -= 1
        moves += 1
    if start > 3 and moves < max_moves:
        steps = np.abs(np.diff(rows[max(start - 8, 0) : start].astype(np.int16), axis=0)).mean(axis=1)
        if steps[-1] > 3.0 * float(np.median(steps[:-1])) + 16.0:
            start -= 1
    return start


def detect_info_bar_in_array(array: np.ndarray, max_bar_fraction: float = _MAX_BAR_FRACTION) -> int | None:
    height, width = array.shape[:2]
    if min(height, width) < _MIN_SIDE:
        return None
    search_row = int(np.ceil(height * (1.0 - max_bar_fraction)))
    context = max(3, height // 50)
    first_row = max(search_row - context - 2, 0)

    rows = array[first_row:, :: max(1, width // _MAX_COLUMNS)]
    if rows.ndim == 3:
        rows = _luminance(rows)
    if rows.dtype != np.uint8:
        rows = np.clip(rows.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
    num_rows, num_columns = rows.shape
    offsets = (np.arange(num_rows, dtype=np.int32) * 256)[:, None]
    hist = np.bincount((rows + offsets).ravel(), minlength=num_rows * 256).reshape(num_rows, 256)
    cumulative = np.zeros((num_rows, 257), np.int32)
    np.cumsum(hist, axis=1, out=cumulative[:, 1:])

    search_start = search_row - first_row
    min_height = max(3, int(np.ceil(0.02 * height)))
    best = None
    for background in _background_candidates(hist, cumulative, search_start):
        level = _window_counts(cumulative, background, _TOLERANCE) / num_columns
        clean = _window_counts(cumulative, background, _CLEAN) / num_columns
        for start, stop in _bands(level, clean, search_start, min_height):
            if best is not None and start >= best:
                break
            if _is_info_bar(rows, cumulative, level, clean, start, stop, background, context):
                best = _extend_over_text(rows, level, start, stop, background)
                break
    if best is None:
        return None
    return first_row + _refine_start(rows, cumulative, best, height)


def detect_info_bar(image: Any, *, max_bar_fraction: float = _MAX_BAR_FRACTION) -> int | None:
    """First row of the SEM information bar, or None when the image has none.

    `image` is a 2-D grayscale array (uint8; uint16 scaled by bit depth; bool; float in [0, 1] or
    [0, 255]); colour arrays, PIL images, tensors and paths are accepted too and read through
    their luma. The bar must start within the bottom `max_bar_fraction` of the image. Works at full
    resolution and on images down-scaled to ~256 px short side, and returns None on bar-less
    crops. Everything from the returned row down (the bar and whatever the microscope left below
    it) is not micrograph.
    """
    if not 0.0 < max_bar_fraction < 1.0:
        raise ValueError(f"max_bar_fraction must be in (0, 1), got {max_bar_fraction}")
    return detect_info_bar_in_array(to_working_array(image), max_bar_fraction)


def remove_info_bar(image: Any, *, max_bar_fraction: float = _MAX_BAR_FRACTION) -> tuple[np.ndarray, int | None]:
    """Crop the information bar (and anything below it) off a micrograph.

    Returns the cropped array (HxW or HxWx3; uint8, or float32 on the 0..255 scale for deeper
    data) and the bar's first row in the original (None when nothing was removed).
    """
    array = to_working_array(image)
    bar_row = detect_info_bar_in_array(array, max_bar_fraction)
    return (array if bar_row is None else array[:bar_row]), bar_row


# --------------------------------------------------------------------------------------------
# Resizing and 8-bit images
# --------------------------------------------------------------------------------------------


def resize_array(array: np.ndarray, height: int, width: int, resample: int = PIL.Image.Resampling.BICUBIC) -> np.ndarray:
    """Resize an HxW / HxWx3 working array with PIL (antialiased); float data keeps its precision."""
    if array.shape[:2] == (height, width):
        return array
    if array.dtype == np.uint8:
        return np.asarray(PIL.Image.fromarray(array).resize((width, height), resample=resample))
    planes = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[-1])]
    resized = [
        np.asarray(PIL.Image.fromarray(np.ascontiguousarray(p, np.float32), "F").resize((width, height), resample))
        for p in planes
    ]
    out = resized[0] if array.ndim == 2 else np.stack(resized, axis=-1)
    return np.clip(out, 0.0, 255.0)  # bicubic overshoot would leave [-1, 1] after normalisation



def to_8bit_image(image: Any) -> PIL.Image.Image:
    """A micrograph as an 8-bit PIL image, mode "L" (grayscale) or "RGB": what a dataset stores.

    The same conversion as the model input's (`to_working_array`: 16-bit data scaled by its bit
    depth, alpha composited over black, palettes resolved), rounded to whole grey levels.
    """
    array = to_working_array(image)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(np.ascontiguousarray(array))
