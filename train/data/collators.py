"""Dataset rows -> model inputs, for training and evaluation alike.

The collators only convert and normalise (``images.PixelValues``): the images were cropped and resized
when the dataset was built. A ``vqa`` row holds no image (schema version 2); the collator finds it in
the ``images`` subset through an ``ImageTable`` (an index built once). Rows that carry their image
(streamed rows, version-1 rows) use it directly.
"""

from __future__ import annotations

import torch

from .augmentation import augment_micrographs
from .images import ImageTable, PixelValues, is_model_ready_row


def pixel_values_for(rows: list[dict], pixels: PixelValues, images: ImageTable | None) -> torch.Tensor:
    """The batch's ``pixel_values``: from each row's own ``image``, else looked up by ``image_id`` in ``images``."""
    if all("image" in row for row in rows):
        return pixels([row["image"] for row in rows], [is_model_ready_row(row) for row in rows])
    if images is None:
        raise ValueError("these vqa rows hold no image (schema version 2): pass the images subset (an ImageTable) to the collator")
    return pixels(images.get([row["image_id"] for row in rows]), images.model_ready)


class VQACollator:
    """Rows of the ``vqa`` subset -> model inputs (captions only under the paper protocol).

    ``image_ids`` (an integer per row's image) let ITC treat every row of the same image as a positive;
    ``positives_by_label`` makes every row of the same class one (labels-template rows, whose text is the
    class's caption: two images of a class are not negatives of each other). ``images`` joins text rows to
    their images. ``with_image_labels`` adds each row's class as ``image_labels`` (the target of MVaEMa's
    optional image-label loss; training batches only). ``augment=True`` (training batches only) applies
    ``augmentation.augment_micrographs``, drawing from torch's global generator, which the training loop
    reseeds at every step.
    """

    def __init__(self, processor, with_captions: bool, with_image_ids: bool = True, positives_by_label: bool = False,
                 images: ImageTable | None = None, with_image_labels: bool = False, augment: bool = False):
        self.processor, self.with_captions, self.with_image_ids = processor, with_captions, with_image_ids
        self.positives_by_label = positives_by_label
        self.images = images
        self.pixels = PixelValues(processor.image_processor)
        self.with_image_labels, self.augment = with_image_labels, augment

    def __call__(self, rows: list[dict]) -> dict:
        batch = dict(
            self.processor(
                text=[row["question"] for row in rows],
                answers=[row["answer"] for row in rows],
                captions=[row["caption"] for row in rows] if self.with_captions else None,
                return_tensors="pt",
            )
        )
        batch["pixel_values"] = pixel_values_for(rows, self.pixels, self.images)
        if self.augment:
            batch["pixel_values"] = augment_micrographs(batch["pixel_values"])
        if self.with_image_ids:
            ids = [row["label"] if self.positives_by_label else int(row["image_id"][:15], 16) for row in rows]
            batch["image_ids"] = torch.tensor(ids)
        if self.with_image_labels:
            batch["image_labels"] = torch.tensor([int(row["label"]) for row in rows])
        return batch


class VQAPromptCollator:
    """Rows of the ``vqa`` subset -> generation prompts (image + question[, caption]), left-padded."""

    def __init__(self, processor, with_captions: bool, images: ImageTable | None = None):
        self.processor, self.with_captions, self.images = processor, with_captions, images
        self.pixels = PixelValues(processor.image_processor)

    def __call__(self, rows: list[dict]) -> dict:
        batch = dict(
            self.processor(
                text=[row["question"] for row in rows],
                captions=[row["caption"] for row in rows] if self.with_captions else None,
                return_tensors="pt",
            )
        )
        batch["pixel_values"] = pixel_values_for(rows, self.pixels, self.images)
        return batch


class ImageCollator:
    """Rows of the ``images`` subset -> ``pixel_values`` and ``labels``.

    ``augment=True`` (training batches only) applies ``augmentation.augment_micrographs``, drawing from torch's
    global generator, which the training loop reseeds at every step.
    """

    def __init__(self, image_processor, augment: bool = False):
        self.image_processor = image_processor
        self.pixels = PixelValues(image_processor)
        self.augment = augment

    def __call__(self, rows: list[dict]) -> dict:
        pixel_values = self.pixels([row["image"] for row in rows], [is_model_ready_row(row) for row in rows])
        if self.augment:
            pixel_values = augment_micrographs(pixel_values)
        return {"pixel_values": pixel_values, "labels": torch.tensor([row["label"] for row in rows])}
