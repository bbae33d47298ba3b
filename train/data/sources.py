"""Where the training scripts get their data: one ``--dataset`` argument, four kinds of source.

- nothing: the embedded synthetic set (generated on first use, cached; images, oracle QA pairs and
  class descriptions all labelled synthetic);
- a folder written by ``build_sem.py`` / ``synthesize.py`` / ``generate_qa.py`` (``images/``,
  ``vqa/``, ``class_descriptions/`` saved with ``save_to_disk``);
- an in-house folder or archive of micrographs (category folders, or metadata.jsonl/csv with
  optional question/answer columns): built with ``build_sem`` into ``<output_dir>/dataset`` first, with a
  fingerprint of the source (``fingerprint``), so a changed source is rebuilt, never silently reused;
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
from typing import TYPE_CHECKING

from emvision.train.loop.arguments import non_negative_int, num_folds_type, positive_int
from emvision.train.loop.preflight import InputError

from emvision.datasets_scripts.storage import SUBSETS, class_descriptions_by_class, schema_version

from .fingerprint import FINGERPRINT_FILE, describe_change, fingerprint_source, read_fingerprint, write_fingerprint

if TYPE_CHECKING:
    from datasets import Dataset


def add_data_args(parser: argparse.ArgumentParser, *, default_synthetic_images: int) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        type=str,
        default=None,
        help="built dataset folder, in-house image folder/archive (built into <output_dir>/dataset), or Hub dataset id "
        "(default: the embedded synthetic set)",
    )
    group.add_argument("--labels", type=str, default=None, metavar="A,B,C",
                       help="your class names, for an in-house --dataset whose folders or labels are not the 10 SEM categories")
    group.add_argument("--synthetic_num_images", type=positive_int, default=default_synthetic_images,
                       help="size of the synthetic set when --dataset is not given")
    group.add_argument("--synthetic_seed", type=non_negative_int, default=0, help="seed of the synthetic set's generator")
    group.add_argument("--fold", type=non_negative_int, default=0, help="test fold, 0..K-1; fold+1 (mod K) validates, the rest train")
    group.add_argument("--num_folds", type=num_folds_type, default=10, help="K, the number of cross-validation folds (>= 3)")
    group.add_argument("--max_train_samples", type=positive_int, default=None, help="truncate the training split (debugging)")
    group.add_argument("--max_eval_samples", type=positive_int, default=None, help="truncate the validation and test splits")


@dataclass
class DatasetSource:
    name: str  # what the model card calls it
    path: Path | None  # local folder holding the subsets, if any
    hub_id: str | None = None

    def load(self, subset: str, required: bool = True) -> Dataset | None:
        from datasets import load_dataset, load_from_disk

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


DEFAULT_SHUFFLE_BUFFER = 1000  # rows held to shuffle a stream


def add_streaming_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("streaming (datasets larger than memory or local disk)")
    group.add_argument("--streaming", action="store_true",
                       help="read the training images as a stream (saved folder or Hub id), split across processes; "
                            "validation and test folds stay map-style")
    group.add_argument("--shuffle_buffer_size", type=positive_int, default=DEFAULT_SHUFFLE_BUFFER,
                       help="rows held to shuffle a stream (images; and question-answer rows for MVaEMa)")


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
            built_copy(path, built, args, accelerator)
            return DatasetSource(name=f"in-house: {path.name}", path=built)
        if "/" in spec and not spec.startswith((".", "/")):
            return DatasetSource(name=spec, path=None, hub_id=spec)
        raise FileNotFoundError(f"--dataset {spec!r}: no such folder or archive, and not a Hub dataset id (owner/name)")


def _build_options(args) -> dict:
    labels = [name.strip() for name in args.labels.split(",") if name.strip()] if getattr(args, "labels", None) else None
    return {"num_folds": args.num_folds, "seed": args.seed, "labels": labels}


def _changed_for_resume(source: Path, built: Path, change: str) -> InputError:
    return InputError(
        f"--dataset {source} has changed since {built} was built from it ({change}); the checkpoints were trained on "
        "the old copy: start a new run (--overwrite_output_dir, without --resume_from_checkpoint) to rebuild it"
    )


def check_dataset_copy(args) -> None:
    """Before a resumed run starts: its raw ``--dataset`` must be the source its built copy was made from."""
    if not getattr(args, "resume_from_checkpoint", None) or args.dataset is None:
        return
    source, built = Path(args.dataset).expanduser(), Path(args.output_dir) / "dataset"
    if not source.exists() or (source.is_dir() and _is_built_dataset(source)) or not _is_built_dataset(built):
        return
    change = describe_change(read_fingerprint(built), fingerprint_source(source, **_build_options(args)))
    if change:
        raise _changed_for_resume(source, built, change)


def built_copy(source: Path, built: Path, args, accelerator) -> None:
    """Build ``source`` into ``built`` unless ``built`` was built from this very source (same files, sizes and
    modification times, same folds, seed and labels). A changed source is rebuilt, saying what changed; a
    resumed run refuses instead, since its checkpoints were trained on the old copy."""
    options = _build_options(args)
    fingerprint = fingerprint_source(source, **options)
    if _is_built_dataset(built):
        change = describe_change(read_fingerprint(built), fingerprint)
        if change is None:
            accelerator.print(f"{built}: built from {source}, which is unchanged ({len(fingerprint.entries)} files): reused")
            return
        if getattr(args, "resume_from_checkpoint", None):
            raise _changed_for_resume(source, built, change)
        accelerator.print(f"{source} has changed since {built} was built from it ({change}): rebuilding it")
    if not accelerator.is_main_process:  # the main process built it first (main_process_first)
        return
    from emvision.datasets_scripts.build_sem import build_sem_dataset

    (built / FINGERPRINT_FILE).unlink(missing_ok=True)  # a build cut short leaves none
    report = build_sem_dataset(source, built, num_folds=args.num_folds, seed=args.seed, labels=options["labels"], overwrite=True,
                               show_progress=accelerator.is_local_main_process)
    write_fingerprint(built, fingerprint)  # last: it vouches for a finished build
    accelerator.print(report.summary())
    unknown = sum(1 for reject in report.rejects if reject.kind == "unknown_class")
    if unknown:
        accelerator.print(f"{unknown} file(s) were not of the classes {'given by --labels' if options['labels'] else 'of the 10 SEM categories'} "
                          f"(see {built / 'rejects.jsonl'}): pass --labels with your class names to keep them")


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


def description_sources(source: DatasetSource) -> list[str]:
    """The ``source`` of every row of the dataset's ``class_descriptions`` subset (empty when it has none)."""
    table = source.load("class_descriptions", required=False)
    if table is None or "source" not in table.column_names:
        return []
    return [str(value) for value in table["source"]]
