"""Where the training scripts get their data: one ``--dataset`` argument, four kinds of source.

- nothing: the embedded synthetic set (generated on first use, cached; images, oracle QA pairs and
  class descriptions all labelled synthetic);
- a folder written by ``build_sem.py`` / ``synthesize.py`` / ``generate_qa.py`` (``images/``,
  ``vqa/``, ``class_descriptions/`` saved with ``save_to_disk``);
- an in-house folder or archive of micrographs (category folders, or metadata.jsonl/csv with
  optional question/answer columns): built with ``build_sem`` into ``<output_dir>/dataset`` first;
- a Hub dataset id whose configs are the subsets (``images``, ``vqa``, ``class_descriptions``).

Datasets in the version-1 layout (images stored again in every ``vqa`` row, the information bar still
on the stored images) are converted on read: ``vqa`` loses its image column, and the collators run the
image processor's full path on version-1 images (as version 1 always did, so slower than version 2).
``python -m emvision.datasets_scripts.storage.convert OLD NEW`` converts such a folder once.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk

from emvision.datasets_scripts.storage import SUBSETS, class_descriptions_by_class, schema_version


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
                return read_as_current_schema(load_dataset(self.hub_id, name=subset, split="train"), subset, self.hub_id)
            except Exception as error:  # noqa: BLE001 - re-raised with the dataset and subset named
                if required:
                    raise RuntimeError(f"could not load subset {subset!r} of Hub dataset {self.hub_id!r}: {error}") from error
                return None
        folder = self.path / subset
        if not (folder / "dataset_info.json").is_file():
            if required:
                raise FileNotFoundError(f"{self.path} has no {subset!r} subset ({folder} is not a saved dataset)")
            return None
        return read_as_current_schema(load_from_disk(str(folder)), subset, self.name)

    @property
    def synthetic(self) -> bool:
        if self.path is None:
            return False
        marker = self.path / "synthesis.json"
        return marker.is_file()


_NOTICED: set[str] = set()


def read_as_current_schema(dataset: Dataset, subset: str, name: str) -> Dataset:
    """A subset as schema version 2 expects it: a version-1 ``vqa`` subset loses the image it repeated in every row."""
    if schema_version(dataset, subset) >= 2:
        return dataset
    if name not in _NOTICED:
        _NOTICED.add(name)
        print(f"{name}: a version-1 dataset (images repeated in vqa, info bar not cut): converted on read; convert it once with "
              "`python -m emvision.datasets_scripts.storage.convert OLD NEW` for faster training")
    if subset == "vqa" and "image" in dataset.column_names:
        return dataset.remove_columns("image")
    return dataset


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


def class_descriptions_from(source: DatasetSource, class_names: list[str]) -> tuple[dict[str, list[str]] | None, str | None]:
    """Every class's descriptions from the dataset's ``class_descriptions`` subset, and their source.

    None (HNF's text branch then reads the class names) when there is no subset, or when some classes
    have no description (e.g. build_sem's hand-written ones cover only the ten SEM categories).
    """
    table = source.load("class_descriptions", required=False)
    if table is None or len(table) == 0:
        return None, None
    names = table.features["label"].names
    described = {names[label] for label in table["label"]}
    missing = [name for name in class_names if name not in described]
    if missing:
        print(f"{source.name}: no class description for {missing}: HNF's text branch uses the class names instead "
              "(add descriptions with datasets_scripts/generate_qa.py or a class_descriptions.jsonl in the source)")
        return None, None
    try:
        return class_descriptions_by_class(({**row, "label": names[row["label"]]} for row in table), class_names)
    except ValueError as error:
        raise ValueError(f"{source.name}: {error}") from error
