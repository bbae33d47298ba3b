"""Image processor shared by HNF and MVaEMa: reads micrographs as they come from a microscope.

Electron micrographs arrive as 8- or 16-bit grayscale TIFF/PNG, RGB-encoded JPEG, palette GIFs,
RGBA screenshots or raw detector floats, and most carry the information bar (the "data zone": high
voltage, working distance, magnification, scale bar, logo) that the microscope burns into the bottom
of the frame. `MicrographImageProcessor` turns any of these into the paper's model input: the
information bar cut off, resized to 224x224, rescaled to [0, 1] and normalised with mean = std = 0.5
to [-1, 1], three channels (grayscale replicated).

Reading the micrographs (decoding, 8-bit scaling, information-bar detection, resizing) lives in
`micrograph.py`, which imports only numpy and PIL. This module and `micrograph.py` are copied
verbatim when a model is saved with `register_for_auto_class`, so they import only numpy, PIL,
torch, transformers and each other (relatively).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
from transformers.image_processing_base import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.image_utils import ChannelDimension, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType, is_torch_tensor

from .micrograph import (
    MicrographImageError,
    detect_info_bar,
    detect_info_bar_in_array,
    load_micrograph,
    micrograph_to_array,
    remove_info_bar,
    resize_array,
    to_working_array,
)

__all__ = [
    "MicrographImageError",
    "MicrographImageProcessor",
    "detect_info_bar",
    "load_micrograph",
    "micrograph_to_array",
    "remove_info_bar",
]


# --------------------------------------------------------------------------------------------
# The image processor
# --------------------------------------------------------------------------------------------


class MicrographImagesKwargs(ImagesKwargs, total=False):
    """`ImagesKwargs` plus `do_remove_info_bar` (bool): crop the SEM information bar before resizing."""

    do_remove_info_bar: bool | None



def _normalize_into(out: np.ndarray, array: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> None:
    """Write `array * gain + bias` (per channel) into the (C, H, W) float32 view `out`, without temporaries.

    A grayscale array fills every channel of `out` (replicated; its own statistics per channel).
    """
    for channel in range(out.shape[0]):
        source = array[..., channel] if array.ndim == 3 else array
        if array.ndim == 2 and channel > 0 and gain[channel] == gain[0] and bias[channel] == bias[0]:
            out[channel] = out[0]
            continue
        np.multiply(source, gain[channel], out=out[channel], dtype=np.float32, casting="unsafe")
        out[channel] += bias[channel]


def _flatten_inputs(images: Any) -> list[Any]:
    """One image or a (possibly nested) list of images -> flat list. 4-D arrays/tensors are batches."""
    if isinstance(images, (str, os.PathLike, PIL.Image.Image)):
        return [images]
    if isinstance(images, np.ndarray) or is_torch_tensor(images):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ValueError(f"expected an image with 2 or 3 dimensions or a batch with 4, got shape {tuple(images.shape)}")
    if isinstance(images, (list, tuple)):
        flat = [image for item in images for image in _flatten_inputs(item)]
        if not flat:
            raise ValueError("no images given (empty list)")
        return flat
    raise TypeError(
        f"unsupported image input {type(images).__name__}: expected a path, PIL image, numpy array, torch tensor "
        "or a list of them"
    )


class MicrographImageProcessor(BaseImageProcessor):
    r"""
    Image processor for electron micrographs, shared by HNF and MVaEMa.

    Each image goes through: decode (paths, PIL images of any mode, numpy arrays or torch tensors;
    8/16/32-bit grayscale, palette, RGB, alpha) -> optional removal of the SEM information bar ->
    resize -> rescale -> normalise -> 3 channels, channels first. 16-bit data keeps its precision up
    to the resize and is scaled by its bit depth, never clipped at 255. Defaults follow the papers:
    224x224, bicubic, rescale by 1/255, mean = std = 0.5 so that pixel values lie in [-1, 1].

    Why `do_remove_info_bar=True` by default: most SEM images (all NFFA-EUROPE ones) carry the
    microscope's data zone in their bottom ~10%: magnification, working distance, scale bar and
    the lab's logo. It holds no morphology, yet magnification and logo correlate with the class
    (tips and MEMS are imaged at low magnification, some labs image one kind of sample), so a
    classifier trained with it learns a shortcut, and it wastes a tenth of the 224 px. The bar is
    detected (`detect_info_bar`), not cut at a fixed fraction, so crops without a bar are kept
    whole. Set it to False for images known to be clean or to study the bar's effect.

    Args:
        do_resize (`bool`, defaults to `True`): resize to `size`.
        size (`dict`, defaults to `{"height": 224, "width": 224}`): target size; `{"shortest_edge": n}`
            keeps the aspect ratio.
        resample (`PILImageResampling`, defaults to `BICUBIC`): PIL filter (antialiased when shrinking).
        do_rescale (`bool`, defaults to `True`): multiply by `rescale_factor` (1/255: 8-bit scale to [0, 1]).
        do_normalize (`bool`, defaults to `True`): subtract `image_mean`, divide by `image_std` (0.5 each).
        do_convert_rgb (`bool`, defaults to `True`): always return 3 channels (grayscale replicated);
            with False, grayscale images keep 1 channel.
        do_remove_info_bar (`bool`, defaults to `True`): crop the information bar and everything below it.
        do_center_crop / crop_size, do_pad / pad_size: as in transformers' image processors.
    """

    valid_kwargs = MicrographImagesKwargs
    model_input_names = ["pixel_values"]

    do_resize = True
    size = {"height": 224, "width": 224}
    resample = PILImageResampling.BICUBIC
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    do_convert_rgb = True
    do_center_crop = False
    do_pad = False
    do_remove_info_bar = True

    def __init__(self, **kwargs: Unpack[MicrographImagesKwargs]):
        super().__init__(**kwargs)
        self._set_attributes(**kwargs)

    # -- input handling ----------------------------------------------------------------------

    def _prepare_images_structure(self, images: Any, expected_ndims: int = 3) -> list[Any]:
        # transformers' version sends strings through `load_image`, which fetches URLs and forces
        # 8-bit RGB; paths are decoded here instead, keeping 16-bit data.
        return _flatten_inputs(images)

    def process_image(
        self,
        image: Any,
        input_data_format: str | ChannelDimension | None = None,
        do_remove_info_bar: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """One raw input -> HxW or HxWx3 working array (uint8 or float32 on the 0..255 scale), bar removed."""
        array = to_working_array(image, input_data_format=input_data_format)
        if do_remove_info_bar:
            bar_row = detect_info_bar_in_array(array)
            if bar_row is not None:
                array = array[:bar_row]
        return array

    # -- batch processing --------------------------------------------------------------------

    def _output_size(self, array: np.ndarray, size: SizeDict) -> tuple[int, int]:
        height, width = array.shape[:2]
        if size.height and size.width:
            return size.height, size.width
        if size.shortest_edge and size.longest_edge:
            return get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
        if size.shortest_edge:  # as transformers: the long side floored
            short, long = sorted((height, width))
            new_long = int(size.shortest_edge * long / short)
            return (size.shortest_edge, new_long) if height <= width else (new_long, size.shortest_edge)
        raise ValueError(f"size must have 'height' and 'width' or 'shortest_edge' (and 'longest_edge'), got {dict(size)}")

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | int | None,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | Sequence[float],
        image_std: float | Sequence[float],
        do_convert_rgb: bool,
        do_pad: bool | None = None,
        pad_size: SizeDict | None = None,
        data_format: str | ChannelDimension | None = ChannelDimension.FIRST,
        return_tensors: str | TensorType | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        resample = PILImageResampling.BICUBIC if resample is None else PILImageResampling(resample)
        # rescale and normalise fused into one multiply-add per channel: x * gain + bias
        scale = rescale_factor if do_rescale else 1.0
        mean = np.broadcast_to(np.asarray(image_mean if do_normalize else 0.0, np.float64), (3,))
        std = np.broadcast_to(np.asarray(image_std if do_normalize else 1.0, np.float64), (3,))
        gain, bias = (scale / std).astype(np.float32), (-mean / std).astype(np.float32)

        resized = []
        for array in images:
            if do_resize:
                array = resize_array(array, *self._output_size(array, size), resample)
            if do_center_crop:
                array = self._center_crop(array, crop_size)
            resized.append(array)

        channels = [3 if array.ndim == 3 or do_convert_rgb else 1 for array in resized]
        if do_pad:
            if pad_size is not None and pad_size.height and pad_size.width:
                padded_hw = (pad_size.height, pad_size.width)
            else:
                padded_hw = (max(a.shape[0] for a in resized), max(a.shape[1] for a in resized))
            for array in resized:
                if array.shape[0] > padded_hw[0] or array.shape[1] > padded_hw[1]:
                    raise ValueError(f"pad_size {padded_hw} is smaller than an image of {array.shape[:2]}")
        shapes = [(c, *(padded_hw if do_pad else a.shape[:2])) for c, a in zip(channels, resized)]

        if return_tensors is not None:
            if len(set(shapes)) > 1:
                raise ValueError(
                    f"cannot batch images of different shapes {sorted(set(shapes))} into tensors: use a fixed "
                    "size={'height': h, 'width': w}, do_pad=True, do_convert_rgb=True, or return_tensors=None"
                )
            batch = (np.zeros if do_pad else np.empty)((len(resized), *shapes[0]), np.float32)
            outputs = list(batch)
        else:
            outputs = [(np.zeros if do_pad else np.empty)(shape, np.float32) for shape in shapes]
        for array, out in zip(resized, outputs):
            _normalize_into(out[:, : array.shape[0], : array.shape[1]], array, gain, bias)

        pixel_values = batch if return_tensors is not None else outputs
        if data_format is not None and ChannelDimension(data_format) == ChannelDimension.LAST:
            if return_tensors is not None:
                pixel_values = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
            else:
                pixel_values = [np.ascontiguousarray(out.transpose(1, 2, 0)) for out in outputs]
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    @staticmethod
    def _center_crop(array: np.ndarray, crop_size: SizeDict) -> np.ndarray:
        height, width = array.shape[:2]
        if crop_size.height > height or crop_size.width > width:
            raise ValueError(f"crop_size {crop_size.height}x{crop_size.width} exceeds the resized image {height}x{width}")
        top, left = (height - crop_size.height) // 2, (width - crop_size.width) // 2
        return array[top : top + crop_size.height, left : left + crop_size.width]
