"""The synthetic-set builder: render on all cores, answer with the oracle, write the subsets (``synthesize``).

SYNTHETIC DATA, ORACLE ANSWERS. The images come from ``generator.generate_micrograph`` (rows say
``source="synthetic"``) and the answers and class descriptions from ``oracle`` (rows say
``teacher`` / ``source`` = ``"oracle-synthetic"``), optionally with the hand-written class
descriptions of ``human_descriptions`` (``source="human"``). The output folder receives, like the
real builder's:

- ``images``: one row per image (features ``storage.images_features()``): the image as the models read
  it (the burned-in information bar cropped off as ``MicrographImageProcessor`` crops it, 224x224,
  ``storage.model_image``), the generated frame's size, the crop box, and what the bar says, from the
  generator's parameters (scale bar, magnification, kV, WD, detector); ``metadata`` = JSON of the
  generating parameters; ``image_id`` = sha256 of the generated frame's PNG bytes; stratified folds;
- ``vqa``: ten rows per image, one per prompt family (``storage.vqa_features()``; text only, joined to
  ``images`` by ``image_id``; the caption names the category: the paper's label-conditioned protocol);
- ``class_descriptions``: ``storage.class_descriptions_features()``;
- ``README.md``: the dataset card (``card.py``); ``synthesis.json``: the parameters that made it.

The output depends only on the options (not on the number of workers), and image ``i`` depends
only on ``(seed, i)``: a larger set starts with the images of a smaller one.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL
from tqdm.auto import tqdm

from emvision.datasets_scripts.storage import (
    DEFAULT_NUM_FOLDS,
    DEFAULT_SHORT_SIDE,
    ORACLE_TEACHER,
    SCHEMA_VERSION,
    SYNTHETIC_SOURCE,
    assign_folds,
    class_descriptions_features,
    exit_with_parent,
    images_features,
    progress_bars,
    save_subset,
    sha256_bytes,
    staged_write,
    stamp_schema_version,
    vqa_features,
)
from emvision.datasets_scripts.storage.model_image import encode_png, prepare_model_image
from emvision.vocabulary import PROMPT_FAMILIES, PROMPT_VERSION, SEM_CATEGORIES, caption_for

from .card import dataset_card
from .generator import GENERATOR_NAME, GENERATOR_VERSION, generate_micrograph
from .oracle import oracle_answers, oracle_class_descriptions

DEFAULT_DESCRIPTIONS_PER_CLASS = 5
DEFAULT_RENDER_SCALE = 2
MARKER_FILE = "synthesis.json"  # written last: a folder without it is incomplete
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
        # what the processor would make of the generated frame: the bar detected and cut, 224x224
        model_image = prepare_model_image(micrograph.image, measure_scale_bar=False)
        records.append({
            "index": index,
            "png": encode_png(model_image.pixels),
            "image_id": sha256_bytes(micrograph.png_bytes()),  # the generated frame's file, as a real image's id
            "label": micrograph.label,
            "width": model_image.width,
            "height": model_image.height,
            "crop_box": list(model_image.crop_box),
            **info_bar_columns(micrograph.metadata),
            "metadata": micrograph.metadata_json(),
            "answers": oracle_answers(micrograph.metadata),
        })
    records[-1]["cpu_seconds"] = time.process_time() - cpu_started  # this chunk's CPU time, for throughput figures
    return records


def info_bar_columns(metadata: dict) -> dict:
    """What the image's information bar says, from the parameters the generator drew it with."""
    imaging, bar = metadata["imaging"], metadata["info_bar"]
    return {
        "scale_bar_px": bar["scale_bar_px"],  # in the generated frame's pixels
        "scale_bar_nm": bar["scale_bar_nm"],
        "pixel_size_nm": metadata["pixel_size_nm"],
        "magnification": imaging["magnification"],
        "accelerating_voltage_kv": imaging["accelerating_voltage_kv"],
        "working_distance_mm": imaging["working_distance_mm"],
        "detector": imaging["detector"],
    }


def default_num_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def render_images(num_images: int, seed: int = 0, *, short_side: int = DEFAULT_SHORT_SIDE, render_scale: int = DEFAULT_RENDER_SCALE,
                  num_workers: int | None = None, progress: bool = True) -> list[dict]:
    """Render images ``0 .. num_images - 1`` of stream ``seed`` (in order) on ``num_workers`` processes.

    Each record holds ``index``, ``png`` (the stored image's bytes), ``image_id``, ``label``,
    ``width``/``height`` (the generated frame), ``crop_box``, the info-bar columns, ``metadata`` (JSON)
    and ``answers`` (question_id -> oracle answer).
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
            with multiprocessing.get_context(method).Pool(min(num_workers, len(jobs)), exit_with_parent, (os.getpid(),)) as pool:
                for chunk_records in pool.imap(_render_chunk, jobs):
                    records += chunk_records
                    bar.update(len(chunk_records))
    return records


# ---------------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------------


_IMAGE_COLUMNS = ("image_id", "label", "width", "height", "crop_box", "scale_bar_px", "scale_bar_nm", "pixel_size_nm",
                  "magnification", "accelerating_voltage_kv", "working_distance_mm", "detector", "metadata")


def _image_rows(records: Sequence[dict], folds: Sequence[int]) -> Iterator[dict]:
    for record, fold in zip(records, folds):
        yield {
            "image": {"bytes": record["png"], "path": None},
            **{name: record[name] for name in _IMAGE_COLUMNS},
            "fold": fold,
            "source": SYNTHETIC_SOURCE,
        }


def _vqa_rows(records: Sequence[dict], folds: Sequence[int]) -> Iterator[dict]:
    captions = {label: caption_for(name) for label, name in enumerate(SEM_CATEGORIES)}
    for record, fold in zip(records, folds):
        for family in PROMPT_FAMILIES:
            yield {
                "image_id": record["image_id"],  # no image: the collators join vqa rows to images
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
        from .human_descriptions import human_class_description_rows

        rows += human_class_description_rows()
    return sorted(rows, key=lambda row: (row["label"], row["source"] != ORACLE_TEACHER))


def synthesis_options(num_images: int, seed: int, num_folds: int, short_side: int, render_scale: int, descriptions_per_class: int, human_descriptions: bool) -> dict:
    return {
        "num_images": num_images,
        "seed": seed,
        "num_folds": num_folds,
        "short_side": short_side,
        "render_scale": render_scale,
        "descriptions_per_class": descriptions_per_class,
        "human_descriptions": human_descriptions,
    }


def check_options(num_images: int, seed: int, num_folds: int, short_side: int, render_scale: int, descriptions_per_class: int, num_workers: int | None) -> None:
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
    check_options(num_images, seed, num_folds, short_side, render_scale, descriptions_per_class, num_workers)
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
    options = synthesis_options(num_images, seed, num_folds, short_side, render_scale, descriptions_per_class, human_descriptions)
    key = cache_key(**options)
    descriptions = class_description_rows(descriptions_per_class, seed, include_human=human_descriptions)
    with progress_bars(False):
        # streamed: memory stays flat although the vqa subset repeats every image ten times
        for name, make_rows, features in (("images", _image_rows, images_features()), ("vqa", _vqa_rows, vqa_features())):
            save_subset(staging / name, features, generator=lambda make_rows=make_rows: make_rows(records, folds), fingerprint=f"{key}-{name}")
        save_subset(staging / "class_descriptions", class_descriptions_features(), descriptions)
        for name in ("images", "vqa", "class_descriptions"):
            stamp_schema_version(staging / name)
    class_counts = dict(sorted(Counter(SEM_CATEGORIES[label] for label in labels).items()))
    summary = {
        "schema_version": SCHEMA_VERSION,
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


def cache_key(**options) -> str:
    """Hash of the generator version, the options, and the library versions that fix the bytes."""
    payload = {
        "schema_version": SCHEMA_VERSION,  # a version-1 cache entry is never taken for a version-2 one
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "options": dict(sorted(options.items())),
        "numpy": ".".join(np.__version__.split(".")[:2]),
        "pillow": ".".join(PIL.__version__.split(".")[:2]),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def summary_line(summary: dict) -> str:
    rate = summary["num_images"] / max(summary["render_seconds"], 1e-9)
    return (f"synthesized {summary['num_images']} images ({len(summary['class_counts'])} classes), {summary['num_qa_pairs']} oracle QA pairs, "
            f"{summary['num_class_descriptions']} class descriptions in {summary['seconds']:.1f} s "
            f"(rendering {rate:.1f} images/s, {1000 * summary['render_cpu_seconds_per_image']:.0f} ms CPU per image) -> {summary['output']}")
