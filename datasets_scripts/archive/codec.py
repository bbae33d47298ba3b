"""One file -> one checked, pre-resized image, as the builder stores it (or why it is rejected).

The image is decoded with PIL (JPEGs downscaled while decoding), brought to 8 bits by the one
converter emvision reads micrographs with (``emvision.processing.micrograph``: 16-bit data scaled by
its bit depth, alpha composited over black, palettes resolved), stored as ``L`` when it is a
grayscale micrograph (colour confined to annotations counts as grayscale) or ``RGB``, resized to its
short side and encoded as PNG (lossless) or JPEG.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from emvision.datasets_scripts.storage import DEFAULT_SHORT_SIDE, sha256_bytes
from emvision.processing.micrograph import to_8bit_image

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (a 9459x9459 image)
# SEM noise leaves deflate's string matching little to find: run-length + Huffman coding (Z_RLE)
# stores the smallest files of zlib's strategies on the smoke micrographs (-8% against level 1, as
# small as level 9) at about level 1's speed, about half of level 6's time.
PNG_ZLIB_STRATEGY = zlib.Z_RLE
# A colour file is a grayscale micrograph when colour is confined to annotations (the microscope's
# info-bar text and scale bar cover ~1% of an NFFA image): at most this share of its pixels may have
# a chroma value (|Cb - 128|, |Cr - 128|, each counted) above the tolerance, well above JPEG's noise.
GRAY_CHROMA_TOLERANCE = 8
GRAY_MAX_COLORED_FRACTION = 0.05


@dataclass(frozen=True)
class ImageOptions:
    """How each image is checked and stored (the same for every file of a build)."""

    short_side: int = DEFAULT_SHORT_SIDE  # 0 keeps the original size
    image_format: str = "png"  # png (lossless) or jpeg
    jpeg_quality: int = 95
    color: str = "auto"  # auto, L or RGB
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.short_side < 0:
            raise ValueError(f"short_side must be >= 0 (0 keeps the original size), got {self.short_side}")
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
    data: bytes  # the stored, pre-resized encoding
    mode: str  # "L" or "RGB"


class ImageRejected(Exception):
    """A file that cannot be part of the dataset; ``kind`` groups the reasons in the build report."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The stored size: short side scaled to ``short_side``, aspect ratio kept, never upscaled."""
    short = min(width, height)
    if short_side <= 0 or short <= short_side:
        return width, height
    scale = short_side / short
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


def prepare_image(data: bytes, options: ImageOptions = ImageOptions()) -> PreparedImage:
    """Check one file's bytes and return the image as it will be stored; raises :class:`ImageRejected`."""
    if not data:
        raise ImageRejected("empty", "empty file (0 bytes)")
    image_id = sha256_bytes(data)
    with _pixel_limit(options.max_pixels):
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageRejected("corrupt", "corrupt image: no image format recognises the file's bytes") from None
        except Exception as error:  # noqa: BLE001 - any decoder failure is this file's problem only
            raise _decode_failure(error) from None
        with image:
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageRejected("corrupt", f"corrupt image: declares an empty size {width}x{height}")
            if width * height > options.max_pixels:
                raise ImageRejected(
                    "decompression_bomb",
                    f"decompression bomb: declares {width}x{height} = {width * height:,} pixels, "
                    f"over the limit of {options.max_pixels:,} (--max_pixels)",
                )
            try:
                pixels = _decode(image, resized_size(width, height, options.short_side), options.color)
            except Exception as error:  # noqa: BLE001
                raise _decode_failure(error) from None
    return PreparedImage(image_id, width, height, _encode(pixels, options), pixels.mode)


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


def _decode(image: Image.Image, size: tuple[int, int], color: str) -> Image.Image:
    """Decode, bring to 8 bits, pick the stored mode (L or RGB) and resize to ``size``."""
    if image.format == "JPEG":
        # libjpeg scales in the DCT domain by 1/2, 1/4 or 1/8 while decoding, as far as ``size``
        # allows: a 1024x768 micrograph is decoded at 512x384, about twice as fast.
        if color == "L" or image.mode == "L":
            image.draft("L", size)
        elif image.mode == "RGB":
            image.draft("YCbCr", size)  # no colour conversion; auto mode looks at the chroma anyway
        else:
            image.draft(None, size)
    image.load()
    if image.mode not in ("L", "RGB", "YCbCr"):  # 16-bit, float, palette, alpha, CMYK, ...
        image = to_8bit_image(image)
    if image.mode == "RGB" and color != "RGB":
        image = _resize(image, size).convert("YCbCr")  # resize first: RGB files (TIFF, PNG) can be large
    if image.mode == "YCbCr":
        if color == "L" or (color == "auto" and _is_neutral(image)):
            image = image.getchannel(0)  # luma: what Pillow's convert("L") computes from RGB
        else:
            image = image.convert("RGB")
    image = _resize(image, size)  # a single band when the micrograph is gray
    return image.convert("RGB") if color == "RGB" else image


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    # bicubic, the default of transformers' CLIP/BLIP image processors; Pillow antialiases downscaling
    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


_COLORED = np.abs(np.arange(256) - 128) > GRAY_CHROMA_TOLERANCE  # chroma value -> visibly coloured?


def _is_neutral(ycbcr: Image.Image) -> bool:
    """Few enough visibly coloured values in the Cb and Cr bands (counted from their histograms)."""
    histogram = np.asarray(ycbcr.histogram()).reshape(3, 256)  # Y, Cb, Cr
    colored = histogram[1:, _COLORED].sum()  # a pixel coloured in both bands counts twice: errs towards RGB
    return colored <= GRAY_MAX_COLORED_FRACTION * ycbcr.width * ycbcr.height


def _encode(image: Image.Image, options: ImageOptions) -> bytes:
    buffer = io.BytesIO()
    if options.image_format == "png":
        image.save(buffer, format="PNG", compress_level=1, compress_type=PNG_ZLIB_STRATEGY)
    else:  # 4:4:4 keeps the colour of thin annotation text sharp
        image.save(buffer, format="JPEG", quality=options.jpeg_quality, subsampling=0)
    return buffer.getvalue()
