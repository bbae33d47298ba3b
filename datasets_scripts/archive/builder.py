"""The SEM dataset builder: ``build_sem_dataset`` (``datasets_scripts/build_sem.py`` is its command line).

A build reads SOURCE (the NFFA archive as extracted, a ``.tar``/``.tgz``/``.zip`` of it, or a user's
folder: ``sources.py``) and writes into DIR one ``datasets.load_from_disk`` folder per subset:

- ``DIR/images``: one row per distinct image as the models read it (information bar cropped off,
  224x224), with its original size, crop box, what the bar shows, and a stratified fold;
- ``DIR/vqa``: one row per question-answer pair, when the metadata has ``question``/``answer`` columns
  (text only: ``image_id`` joins ``images``);
- ``DIR/class_descriptions``: from SOURCE's ``class_descriptions.jsonl``/``.csv``, else the project's
  hand-written descriptions (``source="human"``) of the classes that have one;

plus ``DIR/rejects.jsonl`` (every file left out, and why) and ``DIR/README.md`` (the dataset card:
``card.py``).

The build runs in two passes. Pass 1 (``reading.py``) streams the source once and decodes, checks
and prepares every file for the models on all cores (``codec.py``; the label is not needed for that), spooling
the stored bytes to disk. Pass 2 (``assembly.py``) resolves labels (metadata may come after the
images in a tar), drops exact duplicates, assigns folds and orders the rows by ``image_id``: the same
input gives the same output whatever the order of the archive, the number of workers or where the
input lives. Everything is written into a staging folder inside DIR and moves into place only once
complete (``storage.staged_write``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from emvision.datasets_scripts.storage import (
    DEFAULT_NUM_FOLDS,
    MODEL_IMAGE_SIZE,
    SUBSETS,
    class_descriptions_features,
    images_features,
    progress_bars,
    save_subset,
    staged_write,
    stamp_schema_version,
    vqa_features,
)
from emvision.vocabulary import SEM_CATEGORIES

from .assembly import BuildState, assemble, human_description_rows
from .card import command_line, dataset_card
from .codec import DEFAULT_MAX_PIXELS, ImageOptions
from .reading import read_source
from .sources import ClassMatcher, Reject

OUTPUT_NAMES = (*SUBSETS, "rejects.jsonl", "README.md")
LOCK_NAME = ".build_sem.lock"  # held while a finished build moves into DIR


@dataclass
class BuildReport:
    """What a build produced; ``summary()`` is the one line the CLI prints."""

    output_dir: Path
    class_names: list[str]
    class_counts: dict[str, int]
    num_files: int
    num_qa_pairs: int
    num_descriptions: int
    rejects: list[Reject]
    seconds: float
    num_duplicates: int = 0
    num_conflicts: int = 0  # groups of identical images carrying different labels
    vqa_teachers: dict[str, int] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return sum(self.class_counts.values())

    @property
    def rejects_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(reject.kind for reject in self.rejects).items()))

    def summary(self) -> str:
        by_kind = ", ".join(f"{count} {kind}" for kind, count in self.rejects_by_kind.items())
        rate = self.num_files / self.seconds if self.seconds > 0 else float("inf")
        extra = ""
        if self.num_qa_pairs:
            extra += f", {self.num_qa_pairs:,} QA pairs"
        if self.num_descriptions:
            extra += f", {self.num_descriptions:,} class descriptions"
        return (
            f"{self.output_dir}: {self.num_images:,} images in {sum(1 for c in self.class_counts.values() if c)} classes{extra}; "
            f"{len(self.rejects):,} rejects{f' ({by_kind})' if by_kind else ''}; "
            f"{self.num_files:,} files in {self.seconds:.1f} s ({rate:.0f} files/s)"
        )


def build_sem_dataset(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    num_folds: int = DEFAULT_NUM_FOLDS,
    seed: int = 0,
    short_side: int = MODEL_IMAGE_SIZE,
    image_format: str = "png",
    jpeg_quality: int = 95,
    color: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    labels: Sequence[str] | None = None,
    allow_new_labels: bool = False,
    license: str | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> BuildReport:
    """Build ``images`` (+ ``vqa``, ``class_descriptions``) from ``source`` into ``output_dir``.

    ``labels`` is the class set (default: the ten SEM categories); files of other classes are
    rejected as ``unknown_class`` unless ``allow_new_labels``, which appends the new names (sorted,
    each spelled as most files spell it) after the given ones. ``license`` defaults to CC BY 4.0
    when every image carries the NFFA archive's ``L<k>_<md5>`` name, else to "unknown".
    ``num_workers=None`` uses every core; 0 decodes in this process.
    """
    started = time.perf_counter()
    source, output_dir = Path(source), Path(output_dir)
    if num_folds < 1:
        raise ValueError(f"num_folds must be >= 1, got {num_folds}")
    options = ImageOptions(short_side, image_format, jpeg_quality, color, max_pixels)
    matcher = ClassMatcher(list(labels) if labels else SEM_CATEGORIES, allow_new_labels=allow_new_labels)
    if not source.exists():
        raise FileNotFoundError(f"SOURCE {source}: no such file or folder")
    _check_output(source, output_dir, overwrite)
    if num_workers is None:
        num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    # replace a previous build only once this one is complete
    with staged_write(output_dir, OUTPUT_NAMES, prefix="build_sem", lock=output_dir / LOCK_NAME) as staging:
        spool_path = staging / "images.spool"
        with open(spool_path, "wb") as spool:
            images, tables, rejects, num_files = read_source(source, options, num_workers, spool, show_progress)
        state = assemble(images, tables, rejects, matcher, num_folds, seed)
        if not state.description_rows:  # HNF's text branch and MLM pre-training work without a teacher run
            state.description_rows, state.human_description_classes = human_description_rows(state.class_names)
        _write_subsets(state, spool_path, staging, show_progress)
        report = BuildReport(
            output_dir=output_dir,
            class_names=state.class_names,
            class_counts=state.class_counts(),
            num_files=num_files,
            num_qa_pairs=len(state.qa_rows),
            num_descriptions=len(state.description_rows),
            rejects=sorted(state.rejects, key=lambda r: (r.path, r.kind, r.reason)),
            seconds=0.0,
            num_duplicates=state.num_duplicates,
            num_conflicts=state.num_conflicts,
            vqa_teachers=dict(sorted(Counter(row["teacher"] for row in state.qa_rows).items())),
        )
        with open(staging / "rejects.jsonl", "w", encoding="utf-8") as handle:
            for reject in report.rejects:
                handle.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")
        command = command_line(source.resolve().name, options, num_folds, seed, labels, allow_new_labels, license)
        card = dataset_card(report, state, source_name=source.resolve().name, command=command, options=options, num_folds=num_folds, seed=seed, license=license)
        (staging / "README.md").write_text(str(card), encoding="utf-8")
    report.seconds = time.perf_counter() - started
    return report


def _check_output(source: Path, output_dir: Path, overwrite: bool) -> None:
    resolved_source, resolved_output = source.resolve(), output_dir.resolve()
    if resolved_source.is_dir() and (resolved_output == resolved_source or resolved_source in resolved_output.parents):
        raise ValueError(f"--output {output_dir} lies inside SOURCE {source}: choose a folder outside the source")
    existing = [name for name in OUTPUT_NAMES if (output_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds a build ({', '.join(existing)}); pass --overwrite to replace it")


def _spooled_rows(spool_path: str, rows: Sequence[dict], show_progress: bool, desc: str) -> Iterator[dict]:
    """Generator for ``Dataset.from_generator``: rows with their stored image bytes read back from the spool."""
    with open(spool_path, "rb") as spool:
        for row in tqdm(rows, desc=desc, unit="row", disable=not show_progress):
            if "image" in row:
                offset, length = row["image"]
                spool.seek(offset)
                row = {**row, "image": {"bytes": spool.read(length), "path": None}}
            yield row


def _write_subsets(state: BuildState, spool_path: Path, staging: Path, show_progress: bool) -> None:
    subsets = {"images": (state.image_rows, images_features(state.class_names))}
    if state.qa_rows:
        subsets["vqa"] = (state.qa_rows, vqa_features(state.class_names))
    if state.description_rows:
        subsets["class_descriptions"] = (state.description_rows, class_descriptions_features(state.class_names))
    with progress_bars(False):  # one bar per subset, ours
        for name, (rows, features) in subsets.items():
            if not rows:  # e.g. every file rejected: an empty subset, so the build can still be inspected
                save_subset(staging / name, features)
                stamp_schema_version(staging / name)
                continue
            # the rows and the stored bytes fix the content, so they fix the fingerprint too
            digest = hashlib.sha256(repr(features.to_dict()).encode())
            for row in rows:
                digest.update(repr(sorted((k, v) for k, v in row.items() if k != "image")).encode())
            save_subset(
                staging / name,
                features,
                generator=_spooled_rows,
                # a tuple, not a list: datasets would make every list item a shard of its own
                gen_kwargs={"spool_path": str(spool_path), "rows": tuple(rows), "show_progress": show_progress, "desc": f"Writing {name}"},
                fingerprint=digest.hexdigest()[:32],
            )
            stamp_schema_version(staging / name)
