"""What a teacher run leaves in DIR: the ``vqa`` and ``class_descriptions`` subsets rebuilt from the cache, and the lock.

The subsets are written through ``storage.staged_write``: both are rebuilt from the cache at the end
of every run, in (image_id, question_id) order, and replace the previous ones together. Subsets in
DIR that another tool wrote (in-house QA from build_sem.py) are never replaced without ``overwrite``.
The ``vqa`` rows are text (schema version 2): ``image_id`` joins them to the ``images`` subset the
questions were asked about, which is never copied.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path

from emvision.datasets_scripts.storage import file_lock, progress_bars, save_subset, staged_write, stamp_schema_version
from emvision.vocabulary import FAMILY_BY_ID, caption_for, class_description_prompt

from .cache import TeacherCache
from .planning import Plan, TeacherSettings

CACHE_NAME = "teacher_cache.sqlite"
FAILURES_NAME = "failures.jsonl"
RUNS_NAME = "teacher_runs.jsonl"
LOCK_NAME = ".generate_qa.lock"
WRITTEN_BY = "emvision datasets_scripts/generate_qa.py"  # the subsets' info.description: ours to replace
STAGING_PREFIX = "generate_qa"  # DIR/.generate_qa-*: the subsets being written


def _vqa_rows(cache_path: str, plan_rows: tuple, label_names: tuple[str, ...], settings_json: str):
    """vqa rows from the cache; ``plan_rows`` = (row, image_id, label, fold, ((question_id, key), ...)) per image."""
    from emvision.datasets_scripts.teacher.cache import TeacherCache as Cache

    settings = TeacherSettings(**json.loads(settings_json))
    with Cache(cache_path, readonly=True) as cache:
        for _, image_id, label, fold, keys in plan_rows:
            answers = [(q, cache.get(key)) for q, key in keys]
            answers = [(q, a) for q, a in answers if a is not None]
            if not answers:
                continue
            caption = caption_for(label_names[label]) if settings.with_caption else ""
            for question_id, answer in answers:
                yield {
                    "image_id": image_id,  # joins the images subset: the image is not copied
                    "label": label,
                    "question_id": question_id,
                    "question": FAMILY_BY_ID[question_id].question,
                    "caption": caption,
                    "answer": answer.answer,
                    "teacher": answer.model,
                    "prompt_version": settings.prompt_version,
                    "fold": fold,
                }


def written_by_generate_qa(subset_dir: Path) -> bool:
    info = subset_dir / "dataset_info.json"
    try:
        return json.loads(info.read_text()).get("description") == WRITTEN_BY
    except (OSError, ValueError):
        return False


def holds_only_the_projects_stand_ins(subset_dir: Path) -> bool:
    """Whether a class_descriptions subset holds only the project's hand-written stand-ins (what build_sem.py
    writes when its source has none): the teacher's descriptions are what they stand in for."""
    from datasets import load_from_disk

    from emvision.datasets_scripts.synthetic.human_descriptions import HUMAN_DESCRIPTIONS

    try:
        rows = load_from_disk(str(subset_dir)).select_columns(["description", "source"]).to_list()
    except Exception:  # noqa: BLE001 - anything unreadable is not known to be replaceable
        return False
    stand_ins = set(HUMAN_DESCRIPTIONS.values())
    return bool(rows) and all(row["source"] == "human" and row["description"] in stand_ins for row in rows)


def check_outputs_replaceable(output_dir: Path, overwrite: bool = False) -> None:
    """Refuse to replace a vqa / class_descriptions subset that another tool wrote (e.g. in-house QA from build_sem.py);
    build_sem's stand-in class descriptions are replaced by the teacher's."""
    for name in ("vqa", "class_descriptions"):
        subset = output_dir / name
        if name == "class_descriptions" and subset.exists() and holds_only_the_projects_stand_ins(subset):
            continue
        if subset.exists() and not overwrite and not written_by_generate_qa(subset):
            raise FileExistsError(f"{subset} exists and was not written by generate_qa.py; choose another --output, or pass --overwrite to replace it")


def write_subsets(output_dir: str | Path, dataset_dir: str | Path, plan: Plan, cache_path: str | Path, *, progress: bool = True) -> dict[str, int]:
    """Rebuild ``DIR/vqa`` and ``DIR/class_descriptions`` from the cache (rows in a fixed order). Returns row counts.

    ``dataset_dir`` (the images asked about) is not read: the rows reference its images by ``image_id``.
    """
    from emvision.datasets_scripts.storage import class_descriptions_features, vqa_features

    output_dir = Path(output_dir)
    with TeacherCache(cache_path, readonly=True) as cache:
        cached = cache.keys()
        descriptions = []
        for label, _, key in plan.descriptions:
            answer = cache.get(key)
            if answer is not None:
                name = plan.label_names[label]
                descriptions.append({"label": label, "name": name, "description": answer.answer, "source": answer.model, "prompt": class_description_prompt(name)})
    for stale in output_dir.glob(f".{STAGING_PREFIX}-*"):  # left by a run killed while writing (the caller holds the lock)
        shutil.rmtree(stale, ignore_errors=True)
    counts = {}
    with progress_bars(progress), staged_write(output_dir, ("class_descriptions", "vqa"), prefix=STAGING_PREFIX) as staging:
        counts["class_descriptions"] = save_subset(staging / "class_descriptions", class_descriptions_features(plan.label_names), descriptions, description=WRITTEN_BY)
        features = vqa_features(plan.label_names)
        if not any(key in cached for image in plan.images for key in image.keys.values()):
            counts["vqa"] = save_subset(staging / "vqa", features, description=WRITTEN_BY)
        else:
            # tuples, not lists: datasets would shard a list of gen_kwargs over workers
            plan_rows = tuple((image.row, image.image_id, image.label, image.fold, tuple(sorted(image.keys.items()))) for image in plan.images)
            gen_kwargs = {"cache_path": str(cache_path), "plan_rows": plan_rows, "label_names": tuple(plan.label_names), "settings_json": json.dumps(asdict(plan.settings))}
            counts["vqa"] = save_subset(staging / "vqa", features, generator=_vqa_rows, gen_kwargs=gen_kwargs, fingerprint=uuid.uuid4().hex, description=WRITTEN_BY)
        for name in ("class_descriptions", "vqa"):
            stamp_schema_version(staging / name)
    return counts


def output_lock(output_dir: Path):
    """One run per output folder: two would ask for (and pay for) the same answers."""
    output_dir.mkdir(parents=True, exist_ok=True)
    busy = f"another generate_qa run is writing to {output_dir} (it holds {output_dir / LOCK_NAME}); wait for it or stop it"
    return file_lock(output_dir / LOCK_NAME, wait=False, busy_message=busy)
