"""Cross-validation folds: assigned once per image when a dataset is built, read back as splits at training time.

Every builder stores a stratified, seeded ``fold`` in 0..K-1 on each ``images`` row (and on the ``vqa``
rows of that image); ``fold_splits`` turns those into (train, validation, test) rows for one fold.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

DEFAULT_NUM_FOLDS = 10


def assign_folds(image_ids: Sequence[str], labels: Sequence[int], num_folds: int = DEFAULT_NUM_FOLDS, seed: int = 0) -> list[int]:
    """Stratified, seeded fold per row; independent of row order (rows are ranked by image_id).

    Within each class the images are shuffled and dealt round-robin, so every fold holds
    floor or ceil of n_class / num_folds images of that class.
    """
    if num_folds < 1:
        raise ValueError(f"num_folds must be >= 1, got {num_folds}")
    if len(image_ids) != len(labels):
        raise ValueError(f"{len(image_ids)} image_ids but {len(labels)} labels")
    by_class: dict[int, list[int]] = defaultdict(list)
    for row, label in enumerate(labels):
        by_class[label].append(row)
    folds = [0] * len(labels)
    offset = 0
    for label in sorted(by_class):
        rows = sorted(by_class[label], key=lambda r: image_ids[r])
        random.Random(f"{seed}-{label}").shuffle(rows)
        for position, row in enumerate(rows):
            # the offset spreads the classes' remainders over different folds
            folds[row] = (position + offset) % num_folds
        offset += len(rows)
    return folds


def fold_splits(folds: list[int], fold: int, num_folds: int) -> tuple[list[int], list[int], list[int]]:
    """Row indices of (train, validation, test) for cross-validation fold ``fold``.

    The test fold is ``fold``; the next fold (mod K) is the validation fold that drives early
    stopping and the learning-rate schedule; the other K-2 folds train.
    """
    if not 0 <= fold < num_folds:
        raise ValueError(f"--fold must be in [0, {num_folds}), got {fold}")
    if num_folds < 3:
        raise ValueError("--num_folds must be at least 3 (train, validation and test folds)")
    present = sorted(set(folds))
    if present and max(present) >= num_folds:
        raise ValueError(f"the dataset has fold {max(present)} but --num_folds is {num_folds}")
    val_fold = (fold + 1) % num_folds
    train, val, test = [], [], []
    for row, f in enumerate(folds):
        f = f % num_folds
        (test if f == fold else val if f == val_fold else train).append(row)
    return train, val, test
