"""Images for training batches: ``pixel_values`` from stored images, and the ``images`` subset indexed by ``image_id``.

A schema-2 dataset stores every image as the models read it (the information bar cut off, resized to
224x224: ``emvision.datasets_scripts.storage.model_image``), so making a batch is decoding a copy and
one multiply-add per pixel (``PixelValues``): the same float32 operations, in the same order, as
``MicrographImageProcessor`` after its resize, hence the same ``pixel_values`` to the bit. Images
that are not stored that way take the image processor's full path instead: version-1 rows (the bar
still on, 256 px short side), images kept at another size than the processor's, processors set to
centre-crop or pad, and images a caller passes directly.

``ImageTable`` is the ``images`` subset with an ``image_id`` -> row index built once, so a ``vqa`` row,
which holds no image, finds its image with one lookup and a batch's images come in one read.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image
import torch
import torch.utils.data

from emvision.datasets_scripts.storage import schema_version
from emvision.datasets_scripts.storage.model_image import decode_image

if TYPE_CHECKING:
    from datasets import Dataset

# a row holding an image stored as the models read it (schema version 2) has this column
MODEL_READY_MARKER = "crop_box"


def is_model_ready_row(row: dict) -> bool:
    """Whether a row's ``image`` is stored as the models read it (schema 2: ``crop_box`` is set)."""
    return row.get(MODEL_READY_MARKER) is not None


def image_bytes(image: Any) -> Any:
    """A row's ``image`` as datasets gives it undecoded (``{"bytes", "path"}``) -> its bytes; other values unchanged."""
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            return image["bytes"]
        if image.get("path"):
            with open(image["path"], "rb") as handle:
                return handle.read()
    return image


class PixelValues:
    """Stored images -> ``pixel_values`` (B, 3, H, W) float32, as ``image_processor`` computes them from the originals."""

    def __init__(self, image_processor):
        self.image_processor = image_processor
        size = getattr(image_processor, "size", None) or {}
        height, width = _get(size, "height"), _get(size, "width")
        self.size = (height, width) if height and width else None
        # the fast path covers what MicrographImageProcessor does after its resize, with its own constants
        self.fast = (
            self.size is not None
            and getattr(image_processor, "do_resize", True)
            and not getattr(image_processor, "do_center_crop", False)
            and not getattr(image_processor, "do_pad", False)
            and getattr(image_processor, "do_convert_rgb", True)
        )
        scale = image_processor.rescale_factor if getattr(image_processor, "do_rescale", True) else 1.0
        normalize = getattr(image_processor, "do_normalize", True)
        mean = np.broadcast_to(np.asarray(image_processor.image_mean if normalize else 0.0, np.float64), (3,))
        std = np.broadcast_to(np.asarray(image_processor.image_std if normalize else 1.0, np.float64), (3,))
        self.gain, self.bias = (scale / std).astype(np.float32), (-mean / std).astype(np.float32)
        self.resample = getattr(image_processor, "resample", None)
        self.resample = PIL.Image.Resampling.BICUBIC if self.resample is None else PIL.Image.Resampling(self.resample)

    def __call__(self, images: Sequence[Any], model_ready: bool | Sequence[bool]) -> torch.Tensor:
        """``images``: stored bytes, ``{"bytes", "path"}`` dicts, PIL images or uint8 arrays; ``model_ready``
        says, for all of them or each, whether it is stored as the models read it."""
        flags = [model_ready] * len(images) if isinstance(model_ready, bool) else list(model_ready)
        if len(flags) != len(images):
            raise ValueError(f"{len(images)} images but {len(flags)} model_ready flags")
        if any(flags) and not all(flags):  # a batch mixing both kinds: each its own way
            ready = [index for index, flag in enumerate(flags) if flag]
            other = [index for index, flag in enumerate(flags) if not flag]
            first, second = self([images[i] for i in ready], True), self([images[i] for i in other], False)
            out = first.new_empty((len(images), *first.shape[1:]))
            out[ready], out[other] = first, second
            return out
        if flags and flags[0]:
            if self.fast:
                arrays = [_as_array(image) for image in images]
                if all(array.shape[:2] == self.size and array.dtype == np.uint8 for array in arrays):
                    return self._normalize(arrays)
                if all(array.ndim == 2 and array.dtype == np.uint8 for array in arrays):
                    # gray 8-bit images stored at another size: the processor's own resize (PIL, uint8 in and
                    # out), then the same normalisation, without its per-call work
                    from emvision.processing.micrograph import resize_array

                    return self._normalize([resize_array(array, *self.size, self.resample) for array in arrays])
            # stored without the bar at another size than the processor's, or a processor that crops or pads
            return self._processor([_as_pil(image) for image in images], do_remove_info_bar=False)
        return self._processor([_as_pil(image) for image in images])  # the full path: decode, cut the bar, resize

    def _processor(self, images: list, **kwargs) -> torch.Tensor:
        return self.image_processor(images, return_tensors="pt", **kwargs)["pixel_values"]

    def _normalize(self, arrays: list[np.ndarray]) -> torch.Tensor:
        """``array * gain + bias`` per channel into (B, 3, H, W) float32: the same float32 operations as
        ``MicrographImageProcessor._preprocess`` (a multiply with the uint8 -> float32 cast, then an in-place
        add), so the same values to the bit.

        A batch of gray images (the usual micrograph) comes back as (B, 1, H, W) expanded to 3 channels: the
        processor replicates the gray channel, here the three channels share one memory (a third of the
        writes, and of what DataLoader workers pass to the training process). The models read it as any
        tensor; call ``.contiguous()`` before writing into it.
        """
        gain, bias = self.gain, self.bias
        gray = all(array.ndim == 2 for array in arrays) and bool(np.all(gain == gain[0]) and np.all(bias == bias[0]))
        batch = torch.empty((len(arrays), 1 if gray else 3, *self.size), dtype=torch.float32)
        if torch.utils.data.get_worker_info() is not None:
            batch.share_memory_()  # in a DataLoader worker: written once, in memory the training process maps
        out = batch.numpy()
        for index, array in enumerate(arrays):
            for channel in range(out.shape[1]):
                source = array if array.ndim == 2 else array[..., channel]
                np.multiply(source, gain[channel], out=out[index, channel], dtype=np.float32, casting="unsafe")
                out[index, channel] += bias[channel]
        return batch.expand(-1, 3, -1, -1) if gray else batch


def undecoded(images: Dataset) -> Dataset:
    """The ``images`` subset with its images left as stored bytes (the collators decode them, faster than PIL)."""
    from datasets import Image

    return images.cast_column("image", Image(decode=False))


def _get(size: Any, key: str):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _as_array(image: Any) -> np.ndarray:
    image = image_bytes(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image))
    if isinstance(image, PIL.Image.Image):
        return np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    return np.asarray(image)


def _as_pil(image: Any) -> Any:
    image = image_bytes(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        opened = PIL.Image.open(io.BytesIO(bytes(image)))
        opened.load()
        return opened
    return image


class ImageTable:
    """The ``images`` subset indexed once by ``image_id``: ``get(image_ids)`` reads a batch's stored images at once.

    The index (one dict entry per image) and the memory-mapped table are all that is held; the table
    pickles by reference, so DataLoader workers share the files instead of copying them.
    """

    def __init__(self, images: Dataset):
        from datasets import Image

        missing = [name for name in ("image", "image_id") if name not in images.column_names]
        if missing:
            raise ValueError(f"the images subset lacks the column(s) {missing}")
        self.model_ready = schema_version(images, "images") >= 2
        self.table = images.select_columns(["image"]).cast_column("image", Image(decode=False))
        self.row_of: dict[str, int] = {}
        for row, image_id in enumerate(images["image_id"]):
            self.row_of.setdefault(image_id, row)

    def __len__(self) -> int:
        return len(self.row_of)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.row_of

    def get(self, image_ids: Sequence[str]) -> list[bytes]:
        """The stored bytes of each image (one read for the whole batch)."""
        try:
            rows = [self.row_of[image_id] for image_id in image_ids]
        except KeyError as error:
            raise KeyError(
                f"image_id {error.args[0]!r} of a vqa row is not in the images subset: the vqa subset was made from "
                "another images subset (rebuild it, or pass the dataset folder that holds both)"
            ) from None
        return [image_bytes(item) for item in self.table[rows]["image"]]
