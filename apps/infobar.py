"""What a micrograph says about its own frame: where the information bar starts, and the pixel size.

The bar is found by `processing.micrograph.detect_info_bar_in_array`; its text (magnification, the scale
bar's "200 nm") is not read: there is no OCR. The pixel size is known only when the microscope wrote it
into the file: FEI / Thermo Fisher TIFFs (tag 34682, `[Scan] PixelWidth=` in metres) and ZEISS TIFFs
(tag 34118, `Image Pixel Size = 2.345 nm`). JPEG and PNG copies have neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import PIL.Image

from emvision.processing.micrograph import detect_info_bar_in_array

FEI_METADATA_TAG = 34682
ZEISS_METADATA_TAG = 34118
# "?m": a µ that PIL could not decode from the tag's ASCII
_NM_PER_UNIT = {"pm": 1e-3, "nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "?m": 1e3, "mm": 1e6, "m": 1e9}
_FEI_PIXEL_WIDTH = re.compile(r"^\s*PixelWidth\s*=\s*([0-9.eE+-]+)\s*$", re.M)
_ZEISS_PIXEL_SIZE = re.compile(r"Image Pixel Size\s*=\s*([0-9.eE+-]+)\s*(pm|nm|um|µm|μm|\?m|mm|m)(?![A-Za-z])")


@dataclass(frozen=True)
class FrameInfo:
    """A micrograph's size, its information bar (`bar_row`: first row, None without a bar) and pixel size."""

    width: int
    height: int
    bar_row: int | None
    pixel_size_nm: float | None = None
    scale_source: str | None = None

    @property
    def bar_height(self) -> int:
        return 0 if self.bar_row is None else self.height - self.bar_row

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the micrograph above the bar, PIL's convention."""
        return (0, 0, self.width, self.height if self.bar_row is None else self.bar_row)

    @property
    def field_of_view(self) -> str | None:
        """Width of the frame in physical units, when the pixel size is known ('12.3 µm')."""
        if self.pixel_size_nm is None:
            return None
        return format_length(self.width * self.pixel_size_nm)

    def describe(self) -> str:
        bar = (
            f"information bar: rows {self.bar_row}-{self.height - 1} ({self.bar_height} px), micrograph above it "
            f"{self.width}x{self.bar_row} px"
            if self.bar_row is not None
            else f"no information bar detected ({self.width}x{self.height} px kept whole)"
        )
        if self.pixel_size_nm is None:
            scale = "scale: unknown (the bar's text is not read; the file has no pixel-size metadata)"
        else:
            scale = f"scale: {format_length(self.pixel_size_nm)} per pixel, field of view {self.field_of_view} ({self.scale_source})"
        return f"{bar}; {scale}"


def format_length(nanometres: float) -> str:
    for unit, factor in (("mm", 1e6), ("µm", 1e3), ("nm", 1.0)):
        if nanometres >= factor:
            return f"{nanometres / factor:.3g} {unit}"
    return f"{nanometres * 1e3:.3g} pm"


def pixel_size_from_metadata(image: PIL.Image.Image) -> tuple[float, str] | None:
    """(nanometres per pixel, where it was read) from an FEI or ZEISS TIFF's tags; None when absent."""
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return None
    fei = _tag_text(tags.get(FEI_METADATA_TAG))
    if fei and (match := _FEI_PIXEL_WIDTH.search(fei)):
        value = float(match.group(1)) * 1e9
        if value > 0:
            return value, f"FEI TIFF tag {FEI_METADATA_TAG}"
    zeiss = _tag_text(tags.get(ZEISS_METADATA_TAG))
    if zeiss and (match := _ZEISS_PIXEL_SIZE.search(zeiss)):
        value = float(match.group(1)) * _NM_PER_UNIT[match.group(2)]
        if value > 0:
            return value, f"ZEISS TIFF tag {ZEISS_METADATA_TAG}"
    return None


def _tag_text(value) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


def read_frame_info(array: np.ndarray, image: object = None) -> FrameInfo:
    """The frame of a micrograph's working array (`to_working_array`); `image`, the decoded file, gives metadata."""
    height, width = array.shape[:2]
    pixel_size = pixel_size_from_metadata(image) if isinstance(image, PIL.Image.Image) else None
    return FrameInfo(
        width=width,
        height=height,
        bar_row=detect_info_bar_in_array(array),
        pixel_size_nm=pixel_size[0] if pixel_size else None,
        scale_source=pixel_size[1] if pixel_size else None,
    )
