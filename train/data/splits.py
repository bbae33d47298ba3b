"""The cross-validation split of a training run: fold ``--fold`` tests, the next fold validates, the rest train."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset


def split_by_fold(dataset: Dataset, args) -> tuple[Dataset, Dataset, Dataset]:
    from emvision.datasets_scripts.storage import fold_splits
    from emvision.train.loop.preflight import InputError

    try:
        train_rows, val_rows, test_rows = fold_splits(list(dataset["fold"]), args.fold, args.num_folds)
    except ValueError as error:  # e.g. a dataset built with more folds than --num_folds
        raise InputError(f"--fold {args.fold} --num_folds {args.num_folds}: {error}") from None
    if not train_rows or not val_rows or not test_rows:
        raise InputError(
            f"fold {args.fold} of {args.num_folds} leaves an empty split (train {len(train_rows)}, validation {len(val_rows)}, "
            f"test {len(test_rows)} rows): the dataset has too few images for {args.num_folds} folds"
        )
    if args.max_train_samples:
        train_rows = train_rows[: args.max_train_samples]
    if args.max_eval_samples:
        val_rows, test_rows = val_rows[: args.max_eval_samples], test_rows[: args.max_eval_samples]
    return dataset.select(train_rows), dataset.select(val_rows), dataset.select(test_rows)
