"""Dataset rows -> model inputs, for training and evaluation alike."""

from __future__ import annotations

import torch


class VQACollator:
    """Rows of the ``vqa`` subset -> model inputs (captions only under the paper protocol).

    ``image_ids`` (an integer per row's image) let ITC treat every row of the same image as a positive;
    ``positives_by_label`` makes every row of the same class one (labels-template rows, whose text is the
    class's caption: two images of a class are not negatives of each other).
    """

    def __init__(self, processor, with_captions: bool, with_image_ids: bool = True, positives_by_label: bool = False):
        self.processor, self.with_captions, self.with_image_ids = processor, with_captions, with_image_ids
        self.positives_by_label = positives_by_label

    def __call__(self, rows: list[dict]) -> dict:
        batch = self.processor(
            images=[row["image"] for row in rows],
            text=[row["question"] for row in rows],
            answers=[row["answer"] for row in rows],
            captions=[row["caption"] for row in rows] if self.with_captions else None,
            return_tensors="pt",
        )
        batch = dict(batch)
        if self.with_image_ids:
            ids = [row["label"] if self.positives_by_label else int(row["image_id"][:15], 16) for row in rows]
            batch["image_ids"] = torch.tensor(ids)
        return batch


class ImageCollator:
    """Rows of the ``images`` subset -> ``pixel_values`` and ``labels``."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, rows: list[dict]) -> dict:
        pixel_values = self.image_processor([row["image"] for row in rows], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": torch.tensor([row["label"] for row in rows])}
