"""Cross-validation folds: stratified, independent of row order, and over the K runs of a cross-validation every
image is tested exactly once and validated exactly once, never in two splits of one run."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from emvision.datasets_scripts.storage import assign_folds, fold_splits

# an imbalanced set (as the SEM archive: ~160 Fibres to ~4,700 Patterned_surface), one class smaller than K
CLASS_SIZES = {0: 3, 1: 17, 2: 40, 3: 8, 4: 121, 5: 1, 6: 64}
NUM_FOLDS = 10


@pytest.fixture(scope="module")
def rows() -> tuple[list[str], list[int]]:
    labels = [label for label, size in CLASS_SIZES.items() for _ in range(size)]
    random.Random(1).shuffle(labels)
    ids = [hashlib.sha256(f"image-{index}".encode()).hexdigest() for index in range(len(labels))]
    return ids, labels


def test_folds_are_stratified_and_balanced(rows):
    ids, labels = rows
    folds = assign_folds(ids, labels, num_folds=NUM_FOLDS, seed=0)
    per_class = Counter(zip(labels, folds))
    for label, size in CLASS_SIZES.items():
        counts = [per_class[(label, fold)] for fold in range(NUM_FOLDS)]
        assert sorted(set(counts)) in ([size // NUM_FOLDS], [size // NUM_FOLDS, size // NUM_FOLDS + 1]), (label, counts)
    sizes = Counter(folds)
    assert max(sizes.values()) - min(sizes.values()) <= 1, sizes


def test_folds_follow_the_image_not_the_row_order_and_the_seed_changes_them(rows):
    ids, labels = rows
    folds = dict(zip(ids, assign_folds(ids, labels, num_folds=NUM_FOLDS, seed=0)))
    order = list(range(len(ids)))
    random.Random(2).shuffle(order)
    shuffled = assign_folds([ids[i] for i in order], [labels[i] for i in order], num_folds=NUM_FOLDS, seed=0)
    assert {ids[i]: fold for i, fold in zip(order, shuffled)} == folds
    assert assign_folds(ids, labels, num_folds=NUM_FOLDS, seed=1) != list(folds.values())


def test_every_image_is_tested_once_and_validated_once_across_the_k_folds(rows):
    ids, labels = rows
    folds = assign_folds(ids, labels, num_folds=NUM_FOLDS, seed=0)
    tested, validated = Counter(), Counter()
    for fold in range(NUM_FOLDS):
        train, validation, test = fold_splits(folds, fold, NUM_FOLDS)
        assert not set(train) & set(validation) and not set(train) & set(test) and not set(validation) & set(test)
        assert sorted(train + validation + test) == list(range(len(ids)))
        assert {folds[row] for row in test} == {fold} and {folds[row] for row in validation} == {(fold + 1) % NUM_FOLDS}
        tested.update(test)
        validated.update(validation)
    assert tested == validated == Counter(range(len(ids)))


def test_bad_fold_arguments_are_refused():
    with pytest.raises(ValueError, match="--fold must be in"):
        fold_splits([0, 1, 2], 3, 3)
    with pytest.raises(ValueError, match="the dataset has fold 4 but --num_folds is 3"):
        fold_splits([0, 1, 4], 0, 3)
