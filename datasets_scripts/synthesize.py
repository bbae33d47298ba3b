"""Build the synthetic SEM dataset: procedural micrographs, oracle QA pairs and class descriptions.

    python datasets_scripts/synthesize.py --output DIR --num_images N [--seed S] [--num_folds K]

SYNTHETIC DATA, ORACLE ANSWERS. The images come from ``synthetic_sem.generate_micrograph`` (rows
say ``source="synthetic"``) and the answers and class descriptions from ``oracle_teacher`` (rows
say ``teacher`` / ``source`` = ``"oracle-synthetic"``), optionally with the hand-written class
descriptions of ``human_descriptions`` (``source="human"``). DIR receives, like the real builder:

- ``DIR/images``: one row per image (features ``schema.images_features()``; ``metadata`` = JSON of
  the generating parameters; ``image_id`` = sha256 of the stored PNG bytes; stratified folds);
- ``DIR/vqa``: ten rows per image, one per prompt family (``schema.vqa_features()``; the caption
  names the category: the paper's label-conditioned protocol);
- ``DIR/class_descriptions``: ``schema.class_descriptions_features()``;
- ``DIR/README.md``: the dataset card; ``DIR/synthesis.json``: the parameters that made DIR.

The output depends only on the options (not on ``--num_workers``), and image ``i`` depends only on
``(seed, i)``: a larger set starts with the images of a smaller one.

Training scripts call ``load_or_create_synthetic(num_images=..., seed=...)``, which returns a folder
cached under ``$EMVISION_CACHE/synthetic`` (default ``~/.cache/emvision/synthetic``), keyed by the
generator version and the options, built once under a file lock and moved into place atomically,
so concurrent processes (e.g. two ``accelerate launch`` ranks) share one complete copy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL
from tqdm.auto import tqdm

from emvision.datasets_scripts.oracle_teacher import oracle_answers, oracle_class_descriptions
from emvision.vocabulary import PROMPT_FAMILIES, PROMPT_VERSION, caption_for
from emvision.datasets_scripts.storage import (
    DEFAULT_NUM_FOLDS,
    DEFAULT_SHORT_SIDE,
    ORACLE_TEACHER,
    SUBSETS,
    SYNTHETIC_SOURCE,
    assign_folds,
    class_descriptions_features,
    file_lock,
    images_features,
    progress_bars,
    save_subset,
    sha256_bytes,
    staged_write,
    vqa_features,
)
from emvision.datasets_scripts.synthetic_sem import GENERATOR_NAME, GENERATOR_VERSION, generate_micrograph
from emvision.vocabulary import SEM_CATEGORIES

DEFAULT_NUM_IMAGES = 2000  # the main training job's default
DEFAULT_DESCRIPTIONS_PER_CLASS = 5
DEFAULT_RENDER_SCALE = 2
MARKER_FILE = "synthesis.json"  # written last: a folder without it is incomplete
CACHE_ENV = "EMVISION_CACHE"
_CHUNK = 8  # images per task sent to a worker


# ---------------------------------------------------------------------------------------------
# Rendering on all cores
# ---------------------------------------------------------------------------------------------


def _render_chunk(job: tuple[Sequence[int], int, int, int]) -> list[dict]:
    """Worker: render a few images and answer the ten prompt families for each."""
    indices, seed, short_side, render_scale = job
    records = []
    cpu_started = time.process_time()
    for index in indices:
        micrograph = generate_micrograph(index, seed, short_side=short_side, render_scale=render_scale)
        png = micrograph.png_bytes()
        records.append({
            "index": index,
            "png": png,
            "image_id": sha256_bytes(png),
            "label": micrograph.label,
            "width": micrograph.metadata["render_size"][0],
            "height": micrograph.metadata["render_size"][1],
            "metadata": micrograph.metadata_json(),
            "answers": oracle_answers(micrograph.metadata),
        })
    records[-1]["cpu_seconds"] = time.process_time() - cpu_started  # this chunk's CPU time, for throughput figures
    return records


def default_num_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def render_images(num_images: int, seed: int = 0, *, short_side: int = DEFAULT_SHORT_SIDE, render_scale: int = DEFAULT_RENDER_SCALE,
                  num_workers: int | None = None, progress: bool = True) -> list[dict]:
    """Render images ``0 .. num_images - 1`` of stream ``seed`` (in order) on ``num_workers`` processes.

    Each record holds ``index``, ``png`` (bytes), ``image_id``, ``label``, ``width``/``height``
    (the microscope frame), ``metadata`` (JSON) and ``answers`` (question_id -> oracle answer).
    """
    num_workers = default_num_workers() if num_workers is None else num_workers
    chunks = [range(start, min(start + _CHUNK, num_images)) for start in range(0, num_images, _CHUNK)]
    jobs = [(tuple(chunk), seed, short_side, render_scale) for chunk in chunks]
    records: list[dict] = []
    bar = tqdm(total=num_images, desc="Rendering synthetic micrographs", unit="img", disable=not progress)
    with bar:
        if num_workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                records += _render_chunk(job)
                bar.update(len(job[0]))
        else:
            # fork where the platform has it: workers start at once, with everything imported
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with multiprocessing.get_context(method).Pool(min(num_workers, len(jobs))) as pool:
                for chunk_records in pool.imap(_render_chunk, jobs):
                    records += chunk_records
                    bar.update(len(chunk_records))
    return records


# ---------------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------------


def _image_rows(records: Sequence[dict], folds: Sequence[int]) -> Iterator[dict]:
    for record, fold in zip(records, folds):
        yield {
            "image": {"bytes": record["png"], "path": None},
            "image_id": record["image_id"],
            "label": record["label"],
            "fold": fold,
            "source": SYNTHETIC_SOURCE,
            "width": record["width"],
            "height": record["height"],
            "metadata": record["metadata"],
        }


def _vqa_rows(records: Sequence[dict], folds: Sequence[int]) -> Iterator[dict]:
    captions = {label: caption_for(name) for label, name in enumerate(SEM_CATEGORIES)}
    for record, fold in zip(records, folds):
        image = {"bytes": record["png"], "path": None}
        for family in PROMPT_FAMILIES:
            yield {
                "image_id": record["image_id"],
                "image": image,
                "label": record["label"],
                "question_id": family.question_id,
                "question": family.question,
                "caption": captions[record["label"]],
                "answer": record["answers"][family.question_id],
                "teacher": ORACLE_TEACHER,
                "prompt_version": PROMPT_VERSION,
                "fold": fold,
            }


def class_description_rows(per_class: int = DEFAULT_DESCRIPTIONS_PER_CLASS, seed: int = 0, include_human: bool = True) -> list[dict]:
    """Oracle-synthetic class descriptions (``per_class`` per class), then the hand-written ones."""
    rows = oracle_class_descriptions(per_class=per_class, seed=seed) if per_class > 0 else []
    if include_human:
        from emvision.datasets_scripts.human_descriptions import human_class_description_rows

        rows += human_class_description_rows()
    return sorted(rows, key=lambda row: (row["label"], row["source"] != ORACLE_TEACHER))


def class_description_texts(per_class: int = DEFAULT_DESCRIPTIONS_PER_CLASS, seed: int = 0, include_human: bool = True) -> dict[str, list[str]]:
    """The same class descriptions as plain texts per category name (e.g. for HNF's text branch)."""
    texts: dict[str, list[str]] = {name: [] for name in SEM_CATEGORIES}
    for row in class_description_rows(per_class, seed, include_human):
        texts[row["name"]].append(row["description"])
    return texts


def _options(num_images: int, seed: int, num_folds: int, short_side: int, render_scale: int, descriptions_per_class: int, human_descriptions: bool) -> dict:
    return {
        "num_images": num_images,
        "seed": seed,
        "num_folds": num_folds,
        "short_side": short_side,
        "render_scale": render_scale,
        "descriptions_per_class": descriptions_per_class,
        "human_descriptions": human_descriptions,
    }


def _check_options(num_images: int, seed: int, num_folds: int, short_side: int, render_scale: int, descriptions_per_class: int, num_workers: int | None) -> None:
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if num_folds < 1:
        raise ValueError(f"num_folds must be >= 1, got {num_folds}")
    if short_side < 32:
        raise ValueError(f"short_side must be at least 32 pixels, got {short_side}")
    if render_scale not in (1, 2, 3, 4):
        raise ValueError(f"render_scale must be 1, 2, 3 or 4, got {render_scale}")
    if descriptions_per_class < 0:
        raise ValueError(f"descriptions_per_class must be >= 0, got {descriptions_per_class}")
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")


def synthesize(output_dir: str | os.PathLike, num_images: int, seed: int = 0, *, num_folds: int = DEFAULT_NUM_FOLDS,
               short_side: int = DEFAULT_SHORT_SIDE, render_scale: int = DEFAULT_RENDER_SCALE,
               descriptions_per_class: int = DEFAULT_DESCRIPTIONS_PER_CLASS, human_descriptions: bool = True,
               num_workers: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Build the synthetic dataset in ``output_dir`` (see the module docstring); returns a summary.

    The folder is assembled next to ``output_dir`` and renamed into place when complete, so a
    crash never leaves a half-written dataset behind under the final name.
    """
    _check_options(num_images, seed, num_folds, short_side, render_scale, descriptions_per_class, num_workers)
    output_dir = Path(output_dir)
    if output_dir.exists() and not (output_dir.is_dir() and not any(output_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"{output_dir} already exists and is not empty; choose another --output or pass --overwrite")
    with staged_write(output_dir) as staging:
        summary = _build(staging, num_images, seed, num_folds, short_side, render_scale, descriptions_per_class, human_descriptions, num_workers, progress)
    summary["output"] = str(output_dir)
    return summary


def _build(staging: Path, num_images, seed, num_folds, short_side, render_scale, descriptions_per_class, human_descriptions, num_workers, progress) -> dict:
    started = time.perf_counter()
    records = render_images(num_images, seed, short_side=short_side, render_scale=render_scale, num_workers=num_workers, progress=progress)
    rendered = time.perf_counter()
    ids = [record["image_id"] for record in records]
    if len(set(ids)) != len(ids):  # would mean two identical images: a generator bug
        raise RuntimeError("the generator produced two identical images; please report this with the seed")
    labels = [record["label"] for record in records]
    folds = assign_folds(ids, labels, num_folds=num_folds, seed=seed)
    options = _options(num_images, seed, num_folds, short_side, render_scale, descriptions_per_class, human_descriptions)
    key = cache_key(**options)
    descriptions = class_description_rows(descriptions_per_class, seed, include_human=human_descriptions)
    with progress_bars(False):
        # streamed: memory stays flat although the vqa subset repeats every image ten times
        for name, make_rows, features in (("images", _image_rows, images_features()), ("vqa", _vqa_rows, vqa_features())):
            save_subset(staging / name, features, generator=lambda make_rows=make_rows: make_rows(records, folds), fingerprint=f"{key}-{name}")
        save_subset(staging / "class_descriptions", class_descriptions_features(), descriptions)
    class_counts = dict(sorted(Counter(SEM_CATEGORIES[label] for label in labels).items()))
    summary = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "cache_key": key,
        "options": options,
        "num_images": num_images,
        "num_qa_pairs": num_images * len(PROMPT_FAMILIES),
        "num_class_descriptions": len(descriptions),
        "class_counts": class_counts,
        "teacher": ORACLE_TEACHER,
        "source": SYNTHETIC_SOURCE,
        "prompt_version": PROMPT_VERSION,
    }
    (staging / "README.md").write_text(dataset_card(summary), encoding="utf-8")
    (staging / MARKER_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    finished = time.perf_counter()
    summary["seconds"] = round(finished - started, 2)
    summary["render_seconds"] = round(rendered - started, 2)
    summary["render_cpu_seconds_per_image"] = round(sum(r.get("cpu_seconds", 0.0) for r in records) / num_images, 4)
    return summary


def dataset_card(summary: dict) -> str:
    """The dataset card: YAML metadata and a plain statement that everything here is synthetic."""
    from huggingface_hub import DatasetCard, DatasetCardData

    options = summary["options"]
    n = summary["num_images"]
    card_data = DatasetCardData(
        license="apache-2.0",
        pretty_name="emvision synthetic SEM micrographs with oracle QA (synthetic data)",
        task_categories=["image-classification", "visual-question-answering"],
        tags=["synthetic", "electron-microscopy", "sem", "nanomaterials", "emvision", "oracle-answers"],
        size_categories=["n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "n>100K"],
        emvision={key: summary[key] for key in ("generator", "generator_version", "cache_key", "options", "class_counts", "teacher", "prompt_version")},
    )
    counts = "\n".join(f"| {name} | {count} |" for name, count in summary["class_counts"].items())
    body = f"""# Synthetic SEM micrographs with oracle answers (emvision)

**Everything in this dataset is synthetic.** The images are procedural renderings made by
`{summary['generator']}` version {summary['generator_version']}, not micrographs of real samples, and
the question-answer pairs and the `oracle-synthetic` class descriptions were written by an *oracle*
that reads the parameters the generator drew the image with, not by a person or a model looking at
the image. Use it to develop and test pipelines and as auxiliary training data; never report
accuracy on it as if it were accuracy on real micrographs.

## How it was made

```
python datasets_scripts/synthesize.py --output DIR --num_images {n} --seed {options['seed']} --num_folds {options['num_folds']} \\
    --short_side {options['short_side']} --render_scale {options['render_scale']} --descriptions_per_class {options['descriptions_per_class']}{'' if options['human_descriptions'] else ' --no_human_descriptions'}
```

Each image is drawn at {options['render_scale']}x its stored size (the "microscope" frame) as a height
map and a material map of one of the ten categories of Aversa et al. (2018), imaged with a model of
the secondary-electron signal (edge brightening, shading, beam energy, detector), given shot and
scan-line noise (and charging for insulating samples), stored as 8-bit grayscale PNG at a
{options['short_side']} px short side (4:3), with an information bar burned into the bottom rows
(scale bar whose length matches the magnification, kV, WD, detector). The same seed gives the same
bytes; image `i` depends only on `(seed, i)`.

## Subsets

- `images`: {n} rows. `source` is `"synthetic"`; `metadata` is the JSON of the generating parameters
  (category, variant, magnification, pixel size, detector, info-bar rows, and what was drawn:
  sizes in nm, counts, arrangement, coverage, aggregation, pore fraction, roughness, ...);
  `image_id` is the sha256 of the stored PNG; `width`/`height` are the microscope frame's size;
  `fold` is a stratified fold (0..{options['num_folds'] - 1}).
- `vqa`: {summary['num_qa_pairs']} rows, one per image and prompt family of the MVaEMa paper
  (`question_id` 1-10), `teacher="oracle-synthetic"`, `prompt_version="{summary['prompt_version']}"`.
  The `caption` names the true category: this is the paper's label-conditioned training protocol and
  must not be fed to a model at evaluation time.
- `class_descriptions`: {summary['num_class_descriptions']} rows for HNF's text branch:
  `source="oracle-synthetic"` rows are written from the generator's parameter ranges; `source="human"`
  rows are hand-written general descriptions of each category.

Load a subset with `datasets.load_from_disk("DIR/images")`.

## Class counts

| category | images |
|---|---|
{counts}
"""
    return str(DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}"))


# ---------------------------------------------------------------------------------------------
# The cache the training scripts use
# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$EMVISION_CACHE/synthetic``, else ``~/.cache/emvision/synthetic``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "emvision") / "synthetic"


def cache_key(**options) -> str:
    """Hash of the generator version, the options, and the library versions that fix the bytes."""
    payload = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "options": dict(sorted(options.items())),
        "numpy": ".".join(np.__version__.split(".")[:2]),
        "pillow": ".".join(PIL.__version__.split(".")[:2]),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _is_complete(folder: Path, key: str) -> bool:
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("cache_key") == key and all((folder / subset / "state.json").is_file() for subset in SUBSETS)


def load_or_create_synthetic(num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0, cache_dir: str | os.PathLike | None = None, *,
                             num_folds: int = DEFAULT_NUM_FOLDS, short_side: int = DEFAULT_SHORT_SIDE,
                             render_scale: int = DEFAULT_RENDER_SCALE, descriptions_per_class: int = DEFAULT_DESCRIPTIONS_PER_CLASS,
                             human_descriptions: bool = True, num_workers: int | None = None, progress: bool = True) -> Path:
    """The folder of a synthetic dataset with these options, built on first use and cached.

    The cache entry is ``<cache_dir>/n<N>-seed<S>-<key>``, where the key hashes the generator
    version and every option; an entry is only used when its ``synthesis.json`` matches the key.
    A build holds a lock file, so concurrent callers wait for the first one instead of building
    twice, and the finished folder is renamed into place, so no caller ever sees half of it.
    """
    _check_options(num_images, seed, num_folds, short_side, render_scale, descriptions_per_class, num_workers)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(**_options(num_images, seed, num_folds, short_side, render_scale, descriptions_per_class, human_descriptions))
    target = root / f"n{num_images}-seed{seed}-{key}"
    if _is_complete(target, key):
        return target
    with file_lock(root / f".{target.name}.lock"):  # concurrent callers wait for the first one
        if _is_complete(target, key):  # another process built it while we waited
            return target
        if target.exists():  # incomplete or foreign content under our name: set it aside, never reuse it
            os.replace(target, root / f".{target.name}.stale-{uuid.uuid4().hex[:8]}")
        summary = synthesize(target, num_images, seed, num_folds=num_folds, short_side=short_side, render_scale=render_scale,
                             descriptions_per_class=descriptions_per_class, human_descriptions=human_descriptions,
                             num_workers=num_workers, progress=progress)
        for stale in root.glob(f".{target.name}.stale-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if progress:
            print(_summary_line(summary), file=sys.stderr)
    return target


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _summary_line(summary: dict) -> str:
    rate = summary["num_images"] / max(summary["render_seconds"], 1e-9)
    return (f"synthesized {summary['num_images']} images ({len(summary['class_counts'])} classes), {summary['num_qa_pairs']} oracle QA pairs, "
            f"{summary['num_class_descriptions']} class descriptions in {summary['seconds']:.1f} s "
            f"(rendering {rate:.1f} images/s, {1000 * summary['render_cpu_seconds_per_image']:.0f} ms CPU per image) -> {summary['output']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthesize.py",
        description="Build a SYNTHETIC SEM dataset (procedural micrographs, oracle-derived QA pairs and class "
                    "descriptions) as DIR/images, DIR/vqa, DIR/class_descriptions (datasets.load_from_disk) + a card.",
        epilog="Example: python datasets_scripts/synthesize.py --output data/synthetic --num_images 2000 --seed 0",
    )
    parser.add_argument("--output", required=True, type=Path, help="output folder (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--num_images", required=True, type=_positive_int, help="number of images (balanced over the 10 classes)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="generator and fold seed (default: 0)")
    parser.add_argument("--num_folds", type=_positive_int, default=DEFAULT_NUM_FOLDS, help=f"stratified folds (default: {DEFAULT_NUM_FOLDS})")
    parser.add_argument("--short_side", type=_positive_int, default=DEFAULT_SHORT_SIDE, help=f"stored short side in px, 4:3 images (default: {DEFAULT_SHORT_SIDE})")
    parser.add_argument("--render_scale", type=int, choices=(1, 2, 3, 4), default=DEFAULT_RENDER_SCALE,
                        help=f"microscope frame size as a multiple of the stored size (default: {DEFAULT_RENDER_SCALE})")
    parser.add_argument("--descriptions_per_class", type=_non_negative_int, default=DEFAULT_DESCRIPTIONS_PER_CLASS,
                        help=f"oracle class descriptions per class (default: {DEFAULT_DESCRIPTIONS_PER_CLASS})")
    parser.add_argument("--no_human_descriptions", action="store_true", help="leave out the hand-written class descriptions")
    parser.add_argument("--num_workers", type=_positive_int, default=None, help="rendering processes (default: all available cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.short_side < 32:
        build_parser().error(f"--short_side must be at least 32 pixels, got {args.short_side}")
    try:
        summary = synthesize(args.output, args.num_images, args.seed, num_folds=args.num_folds, short_side=args.short_side,
                             render_scale=args.render_scale, descriptions_per_class=args.descriptions_per_class,
                             human_descriptions=not args.no_human_descriptions, num_workers=args.num_workers,
                             overwrite=args.overwrite, progress=not args.quiet)
    except FileExistsError as error:
        print(f"synthesize.py: error: {error}", file=sys.stderr)
        return 2
    print(_summary_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
