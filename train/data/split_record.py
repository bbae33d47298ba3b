"""Which images a trained model saw (``split.json`` in its folder), and the check that refuses to evaluate a reused
model on them.

A model folder written by ``train/vqa.py`` or ``train/classify.py`` records its split: the dataset and a fingerprint of
it, ``--fold``/``--num_folds``/``--seed``, a sha256 of the sorted image ids of each split (train, validation, test), and
the image ids of the training and validation splits themselves. The validation fold counts as seen: it chose the
restored weights and drove the learning-rate schedule and early stopping. A model started from another one
(``--model_name_or_path``) also carries the images its base saw.

A run that evaluates a model it did not train from scratch on its own test fold (``train/classify.py
--mvaema_model``; ``--model_name_or_path`` in both scripts) reads that record first and stops, in one line, when the
model saw any image of the test fold: its figures would be measured on images it learned from. Image ids are the
sha256 of each original file's bytes, so the check holds across datasets built from the same files. A folder without
a record (a Hub model, or one saved before records existed) is evaluated with a warning that overlap cannot be checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emvision.train.loop.preflight import InputError

SPLIT_FILE = "split.json"
SPLIT_NAMES = ("train", "validation", "test")


def ids_sha256(image_ids: Iterable[str]) -> str:
    """sha256 of the sorted, distinct image ids, one per line: the same set gives the same hash in any row order."""
    return hashlib.sha256("\n".join(sorted(set(image_ids))).encode()).hexdigest()


def image_folds(table) -> dict[str, int]:
    """image_id -> fold, from a table's ``image_id`` and ``fold`` columns (``images`` rows, or ``vqa`` rows that repeat them)."""
    columns = table.select_columns(["image_id", "fold"])
    return dict(zip(columns["image_id"], columns["fold"]))


def source_image_folds(source, streaming: bool = False) -> dict[str, int]:
    """image_id -> fold of a source's ``images`` subset: its two columns (memory-mapped for a saved folder), or, for a
    Hub dataset read with ``--streaming``, one streamed pass over them."""
    if source.path is not None or not streaming:
        return image_folds(source.load("images"))
    from datasets import load_dataset

    stream = load_dataset(source.hub_id, name="images", split="train", streaming=True).select_columns(["image_id", "fold"])
    return {row["image_id"]: row["fold"] for row in stream}


def fold_image_ids(folds: dict[str, int], fold: int, num_folds: int) -> list[str]:
    """The images of fold ``fold`` (folds are read modulo ``num_folds``, as ``fold_splits`` reads them)."""
    return sorted(image_id for image_id, f in folds.items() if f % num_folds == fold)


@dataclass
class SplitRecord:
    """``split.json``: what a trained model saw, and how its test fold was drawn."""

    dataset: str
    dataset_fingerprint: str  # ids_sha256 of "image_id:fold" over the whole table the split was drawn from
    fold: int
    num_folds: int
    seed: int
    num_images: dict[str, int]  # split -> distinct images
    sha256: dict[str, str]  # split -> ids_sha256 of its image ids
    train_image_ids: list[str]
    validation_image_ids: list[str]
    base_model: str | None = None  # --model_name_or_path, when the run started from a trained model
    base_image_ids: list[str] = field(default_factory=list)  # the images the base model saw (from its own record)
    base_unrecorded: bool = False  # the base (or one of its ancestors) kept no record: what it saw is unknown

    @classmethod
    def from_splits(cls, *, dataset: str, folds: dict[str, int], args, train_ids: Iterable[str], validation_ids: Iterable[str],
                    test_ids: Iterable[str], base_model: str | None = None, base: SplitRecord | None = None) -> SplitRecord:
        splits = dict(zip(SPLIT_NAMES, (sorted(set(ids)) for ids in (train_ids, validation_ids, test_ids))))
        return cls(
            dataset=dataset,
            dataset_fingerprint=ids_sha256(f"{image_id}:{f}" for image_id, f in folds.items()),
            fold=args.fold,
            num_folds=args.num_folds,
            seed=args.seed,
            num_images={name: len(ids) for name, ids in splits.items()},
            sha256={name: ids_sha256(ids) for name, ids in splits.items()},
            train_image_ids=splits["train"],
            validation_image_ids=splits["validation"],
            base_model=base_model,
            base_image_ids=sorted(base.seen_image_ids()) if base else [],
            base_unrecorded=bool(base_model) and (base is None or base.base_unrecorded),
        )

    def seen_image_ids(self) -> set[str]:
        return {*self.train_image_ids, *self.validation_image_ids, *self.base_image_ids}

    def summary(self) -> dict:
        """What ``metrics.json`` repeats of the record (no id lists)."""
        return {"file": SPLIT_FILE, "dataset_fingerprint": self.dataset_fingerprint, "fold": self.fold, "num_folds": self.num_folds,
                "seed": self.seed, "num_images": self.num_images, "sha256": self.sha256, "base_model": self.base_model,
                "base_unrecorded": self.base_unrecorded}

    def save(self, folder: str | Path) -> None:
        (Path(folder) / SPLIT_FILE).write_text(json.dumps(asdict(self)) + "\n")


def read_split_record(name_or_path: str) -> SplitRecord | None:
    """The record of a local model folder or a Hub model (from the Hub cache when offline); None when it has none."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        record_path = path / SPLIT_FILE
    else:
        try:
            from huggingface_hub import hf_hub_download

            record_path = Path(hf_hub_download(name_or_path, SPLIT_FILE))
        except Exception:  # noqa: BLE001 - no record on the Hub (or not reachable): the caller warns
            return None
    if not record_path.is_file():
        return None
    try:
        return SplitRecord(**json.loads(record_path.read_text()))
    except (ValueError, TypeError) as error:
        raise InputError(f"{record_path}: not a split record this version can read ({type(error).__name__}: {error}); "
                         f"delete it to evaluate without the overlap check") from None


def check_reused_model(option: str, name_or_path: str | None, test_ids: Iterable[str], args,
                       log: Callable[[str], None] = print) -> SplitRecord | None:
    """Refuse (``InputError``, one line) when the model ``option`` names saw any image of this run's test fold; warn
    when it keeps no record. Returns the model's record (None without one)."""
    if not name_or_path:
        return None
    record = read_split_record(name_or_path)
    if record is None:
        log(f"Warning: {option} {name_or_path} has no {SPLIT_FILE} (a Hub model, or saved before splits were recorded): "
            f"whether it was trained on images of this run's test fold {args.fold} cannot be checked")
        return None
    test = set(test_ids)
    overlap = {
        "in its training split": test.intersection(record.train_image_ids),
        "in the validation fold that chose its weights": test.intersection(record.validation_image_ids),
        f"seen by its base model {record.base_model}": test.intersection(record.base_image_ids),
    }
    seen = set().union(*overlap.values())
    if seen:
        where = ", ".join(f"{len(ids)} {what}" for what, ids in overlap.items() if ids)
        raise InputError(
            f"{option} {name_or_path} saw {len(seen)} of the {len(test)} images of this run's test fold {args.fold} of {args.num_folds} "
            f"({where}; it was trained with --fold {record.fold} --num_folds {record.num_folds} --seed {record.seed} on {record.dataset}): "
            f"its figures would be measured on images it learned from; train it on the same --fold {args.fold} --num_folds "
            f"{args.num_folds} --seed {args.seed}, or pass a model trained on other data"
        )
    if record.base_unrecorded:
        log(f"Warning: {option} {name_or_path} was started from a model that records no split: whether that model saw "
            f"images of this run's test fold {args.fold} cannot be checked")
    return record


def split_of_run(*, dataset: str, folds: dict[str, int], args, train_ids: Iterable[str],
                 evaluated: Iterable[tuple[str, str | None]] = (), log: Callable[[str], None] = print) -> SplitRecord:
    """A training run's record, after checking every trained model it reuses against its test fold: the base model
    (``--model_name_or_path``), whose seen images the new record inherits, and the ``evaluated`` (option, model) pairs.

    ``train_ids`` are the images the run trains on (fewer than the training folds' under ``--max_train_samples``); the
    validation and test splits are recorded as whole folds, whatever ``--max_eval_samples`` reads of them, so that
    two runs on the same split record the same hashes."""
    validation_ids = fold_image_ids(folds, (args.fold + 1) % args.num_folds, args.num_folds)
    test_ids = fold_image_ids(folds, args.fold, args.num_folds)
    base_model = getattr(args, "model_name_or_path", None)
    base = check_reused_model("--model_name_or_path", base_model, test_ids, args, log)
    for option, name_or_path in evaluated:
        check_reused_model(option, name_or_path, test_ids, args, log)
    return SplitRecord.from_splits(dataset=dataset, folds=folds, args=args, train_ids=train_ids, validation_ids=validation_ids,
                                   test_ids=test_ids, base_model=base_model, base=base)
