"""What makes a resumed run end with the same weights as an uninterrupted one: the data order depends only on
(seed, epoch), and every optimizer step reseeds the random generators from (seed, step, process)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def seed_everything(seed: int, *stream: int) -> None:
    """Seed python, numpy and torch from (seed, *stream) so a step's randomness depends on nothing else."""
    value = seed
    for s in stream:
        value = (value * 1_000_003 + s) % (2**31 - 1)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


class EpochShuffleSampler(Sampler[int]):
    """A permutation of the dataset that depends only on (seed, epoch)."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        self.num_samples, self.seed, self.shuffle, self.epoch = num_samples, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class ImageQuestionSampler(Sampler[int]):
    """One question-answer row per image per epoch: every image once, in an order, and with a question, that
    depend only on (seed, epoch). A batch then holds distinct images: ITC has no duplicate positives, and the
    image encoder sees as many different images per step as the batch holds, where drawing rows shows it ~48
    rows of far fewer images over the ten questions of each. ``question_weights`` ({question_id: weight},
    default 1) draws some families (the Basics question, which names the category) more often.
    """

    def __init__(self, image_ids, question_ids, seed: int, question_weights: dict[int, float] | None = None):
        groups: dict = {}
        for row, key in enumerate(image_ids):
            groups.setdefault(key, []).append(row)
        self.groups = list(groups.values())
        weights, question_ids = question_weights or {}, list(question_ids)
        self.weights = [torch.tensor([float(weights.get(question_ids[row], 1.0)) for row in rows]) for rows in self.groups]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
        for index in torch.randperm(len(self.groups), generator=generator).tolist():
            yield self.groups[index][int(torch.multinomial(self.weights[index], 1, generator=generator))]

    def __len__(self) -> int:
        return len(self.groups)
