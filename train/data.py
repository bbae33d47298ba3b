"""Where the training scripts get their data: one ``--dataset`` argument, four kinds of source.

- nothing: the embedded synthetic set (generated on first use, cached; images, oracle QA pairs and
  class descriptions all labelled synthetic);
- a folder written by ``build_sem.py`` / ``synthesize.py`` / ``generate_qa.py`` (``images/``,
  ``vqa/``, ``class_descriptions/`` saved with ``save_to_disk``);
- an in-house folder or archive of micrographs (category folders, or metadata.jsonl/csv with
  optional question/answer columns): built with ``build_sem`` into ``<output_dir>/dataset`` first;
- a Hub dataset id whose configs are the subsets (``images``, ``vqa``, ``class_descriptions``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset, load_dataset, load_from_disk

SUBSETS = ("images", "vqa", "class_descriptions")


def add_data_args(parser: argparse.ArgumentParser, *, default_synthetic_images: int) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        type=str,
        default=None,
        help="built dataset folder, in-house image folder/archive, or Hub dataset id (default: the embedded synthetic set)",
    )
    group.add_argument("--synthetic_num_images", type=int, default=default_synthetic_images, help="size of the synthetic set when --dataset is not given")
    group.add_argument("--synthetic_seed", type=int, default=0)
    group.add_argument("--fold", type=int, default=0, help="test fold; fold+1 (mod K) validates, the rest train")
    group.add_argument("--num_folds", type=int, default=10)
    group.add_argument("--max_train_samples", type=int, default=None, help="truncate the training split (debugging)")
    group.add_argument("--max_eval_samples", type=int, default=None, help="truncate the validation and test splits")


@dataclass
class DatasetSource:
    name: str  # what the model card calls it
    path: Path | None  # local folder holding the subsets, if any
    hub_id: str | None = None

    def load(self, subset: str, required: bool = True) -> Dataset | None:
        if subset not in SUBSETS:
            raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
        if self.hub_id:
            try:
                return load_dataset(self.hub_id, name=subset, split="train")
            except Exception as error:  # noqa: BLE001 - re-raised with the dataset and subset named
                if required:
                    raise RuntimeError(f"could not load subset {subset!r} of Hub dataset {self.hub_id!r}: {error}") from error
                return None
        folder = self.path / subset
        if not (folder / "dataset_info.json").is_file():
            if required:
                raise FileNotFoundError(f"{self.path} has no {subset!r} subset ({folder} is not a saved dataset)")
            return None
        return load_from_disk(str(folder))

    @property
    def synthetic(self) -> bool:
        if self.path is None:
            return False
        marker = self.path / "synthesis.json"
        return marker.is_file()


def _is_built_dataset(path: Path) -> bool:
    return any((path / subset / "dataset_info.json").is_file() for subset in SUBSETS)


def resolve_dataset(args, accelerator, *, output_dir: str | Path) -> DatasetSource:
    """Find or build the dataset ``--dataset`` names (the main process builds; the others wait)."""
    spec = args.dataset
    with accelerator.main_process_first():
        if spec is None:
            from emvision.datasets_scripts.synthesize import load_or_create_synthetic

            path = load_or_create_synthetic(num_images=args.synthetic_num_images, seed=args.synthetic_seed, num_folds=args.num_folds,
                                            progress=accelerator.is_local_main_process)
            return DatasetSource(name=f"emvision-synthetic-sem (synthetic, {args.synthetic_num_images} images, seed {args.synthetic_seed})", path=path)
        path = Path(spec).expanduser()
        if path.is_dir() and _is_built_dataset(path):
            return DatasetSource(name=str(spec), path=path)
        if path.exists():  # an in-house folder or archive of micrographs
            built = Path(output_dir) / "dataset"
            if not _is_built_dataset(built):
                from emvision.datasets_scripts.build_sem import build_sem_dataset

                report = build_sem_dataset(path, built, num_folds=args.num_folds, seed=args.seed, overwrite=True,
                                           show_progress=accelerator.is_local_main_process)
                accelerator.print(report.summary())
            return DatasetSource(name=f"in-house: {path.name}", path=built)
        if "/" in spec and not spec.startswith((".", "/")):
            return DatasetSource(name=spec, path=None, hub_id=spec)
        raise FileNotFoundError(f"--dataset {spec!r}: no such folder or archive, and not a Hub dataset id (owner/name)")


def split_by_fold(dataset: Dataset, args) -> tuple[Dataset, Dataset, Dataset]:
    from emvision.datasets_scripts.storage import fold_splits

    train_rows, val_rows, test_rows = fold_splits(list(dataset["fold"]), args.fold, args.num_folds)
    if not train_rows or not val_rows or not test_rows:
        raise ValueError(
            f"fold {args.fold} of {args.num_folds} leaves an empty split (train {len(train_rows)}, validation {len(val_rows)}, "
            f"test {len(test_rows)} rows): the dataset has too few images for {args.num_folds} folds"
        )
    if args.max_train_samples:
        train_rows = train_rows[: args.max_train_samples]
    if args.max_eval_samples:
        val_rows, test_rows = val_rows[: args.max_eval_samples], test_rows[: args.max_eval_samples]
    return dataset.select(train_rows), dataset.select(val_rows), dataset.select(test_rows)


def load_metadata(source: DatasetSource) -> dict:
    """The synthesis/build summary saved beside the subsets, if any."""
    if source.path is None:
        return {}
    marker = source.path / "synthesis.json"
    return json.loads(marker.read_text()) if marker.is_file() else {}


class VQACollator:
    """Rows of the ``vqa`` subset -> model inputs (captions only under the paper protocol).

    ``image_ids`` (an integer per row's image) let ITC treat every row of the same image as a positive.
    """

    def __init__(self, processor, with_captions: bool, with_image_ids: bool = True):
        self.processor, self.with_captions, self.with_image_ids = processor, with_captions, with_image_ids

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
            batch["image_ids"] = torch.tensor([int(row["image_id"][:15], 16) for row in rows])
        return batch


class ImageCollator:
    """Rows of the ``images`` subset -> ``pixel_values`` and ``labels``."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, rows: list[dict]) -> dict:
        pixel_values = self.image_processor([row["image"] for row in rows], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": torch.tensor([row["label"] for row in rows])}
