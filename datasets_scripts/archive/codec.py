"""One file -> one checked image as the builder stores it, ready for the models (or why it is rejected).

The file is decoded with PIL as ``MicrographImageProcessor`` decodes a path (fully, EXIF orientation
applied), then ``storage.model_image.prepare_model_image`` runs the processor's own steps: 8 bits by
the one converter emvision reads micrographs with (16-bit data scaled by its bit depth, alpha
composited over black, palettes resolved), the information bar detected and cropped off, a resize to
``MODEL_IMAGE_SIZE`` x ``MODEL_IMAGE_SIZE``. What the bar shows that can be measured without OCR (the
scale bar's length in pixels) is kept. The image is stored as ``L`` when it is gray (R = G = B) and
``RGB`` otherwise, as an uncompressed PNG (exact, and a copy to read back) or a JPEG.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from emvision.datasets_scripts.storage import MODEL_IMAGE_SIZE, sha256_bytes
from emvision.datasets_scripts.storage.model_image import encode_jpeg, encode_png, open_image_bytes, prepare_model_image

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (a 9459x9459 image)


@dataclass(frozen=True)
class ImageOptions:
    """How each image is checked and stored (the same for every file of a build)."""

    short_side: int = MODEL_IMAGE_SIZE  # the stored image is short_side x short_side; 0 keeps the cropped original size
    image_format: str = "png"  # png (lossless, uncompressed) or jpeg
    jpeg_quality: int = 95
    color: str = "auto"  # auto (L when gray, else RGB), L or RGB
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.short_side < 0:
            raise ValueError(f"short_side must be >= 0 (0 keeps the cropped original size), got {self.short_side}")
        if self.image_format not in ("png", "jpeg"):
            raise ValueError(f"image_format must be 'png' or 'jpeg', got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.color not in ("auto", "L", "RGB"):
            raise ValueError(f"color must be 'auto', 'L' or 'RGB', got {self.color!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")


@dataclass(frozen=True)
class PreparedImage:
    image_id: str  # sha256 of the original bytes
    width: int  # original size
    height: int
    data: bytes  # the stored encoding: bar cropped, resized to what the models read
    mode: str  # "L" or "RGB"
    crop_box: tuple[int, int, int, int]  # (left, top, right, bottom) of the original that the stored image shows
    scale_bar_px: float | None  # the scale bar's length in original pixels, when one was found in the bar


class ImageRejected(Exception):
    """A file that cannot be part of the dataset; ``kind`` groups the reasons in the build report."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def prepare_image(data: bytes, options: ImageOptions = ImageOptions()) -> PreparedImage:
    """Check one file's bytes and return the image as it will be stored; raises :class:`ImageRejected`."""
    if not data:
        raise ImageRejected("empty", "empty file (0 bytes)")
    image_id = sha256_bytes(data)
    with _pixel_limit(options.max_pixels):
        try:
            header = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageRejected("corrupt", "corrupt image: no image format recognises the file's bytes") from None
        except Exception as error:  # noqa: BLE001 - any decoder failure is this file's problem only
            raise _decode_failure(error) from None
        with header:
            width, height = header.size
        if width < 1 or height < 1:
            raise ImageRejected("corrupt", f"corrupt image: declares an empty size {width}x{height}")
        if width * height > options.max_pixels:
            raise ImageRejected(
                "decompression_bomb",
                f"decompression bomb: declares {width}x{height} = {width * height:,} pixels, "
                f"over the limit of {options.max_pixels:,} (--max_pixels)",
            )
        try:
            prepared = prepare_model_image(open_image_bytes(data), size=options.short_side, color=options.color)
        except Exception as error:  # noqa: BLE001
            raise _decode_failure(error) from None
    pixels = prepared.pixels
    encoded = encode_png(pixels) if options.image_format == "png" else encode_jpeg(pixels, options.jpeg_quality)
    return PreparedImage(image_id, prepared.width, prepared.height, encoded, prepared.mode, prepared.crop_box, prepared.scale_bar_px)


@contextlib.contextmanager
def _pixel_limit(max_pixels: int):
    """Pillow's own bomb check off while opening: we reject above ``max_pixels`` ourselves, naming the declared size."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _decode_failure(error: BaseException) -> ImageRejected:
    message = re.sub(r" at 0x[0-9a-fA-F]+", "", str(error)) or type(error).__name__
    if isinstance(error, EOFError) or "truncated" in message.lower():
        return ImageRejected("truncated", f"truncated image: {message}")
    if isinstance(error, MemoryError):
        return ImageRejected("corrupt", "cannot decode: out of memory")
    return ImageRejected("corrupt", f"corrupt image: {type(error).__name__}: {message}")
