"""Pass 2 of a build: labels, duplicates, folds, question-answer pairs and class descriptions, in a sorted order.

Everything here works on the pass-1 results (``reading.SpooledImage``: path, image_id, size, where
the stored bytes lie in the spool) and the metadata tables, so the same input gives the same rows
whatever the order of the archive or the number of workers.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from emvision.datasets_scripts.storage import HUMAN_SOURCE, INFO_BAR_COLUMNS, assign_folds
from emvision.vocabulary import FAMILY_BY_ID, PROMPT_FAMILIES, PROMPT_VERSION, caption_for

from .reading import SpooledImage
from .sources import ClassMatcher, Reject, clean_member_path, normalize_class_name

IN_HOUSE_TEACHER = "in-house"
# metadata columns with a meaning of their own; every other column goes to the row's `metadata` JSON
QA_COLUMNS = ("question", "answer", "caption", "teacher", "question_id", "prompt_version")
RESERVED_COLUMNS = frozenset({"file_name", "label", *QA_COLUMNS})
_FAMILY_BY_QUESTION = {family.question: family.question_id for family in PROMPT_FAMILIES}


@dataclass
class BuildState:
    class_names: list[str]
    image_rows: list[dict]  # sorted by image_id; "image" is (offset, length) in the spool
    qa_rows: list[dict]
    description_rows: list[dict]
    rejects: list[Reject]
    num_duplicates: int
    num_conflicts: int
    modes: Counter
    human_description_classes: list[str] = field(default_factory=list)  # classes given the project's hand-written descriptions

    def class_counts(self) -> dict[str, int]:
        counts = Counter(row["label"] for row in self.image_rows)
        return {name: counts.get(index, 0) for index, name in enumerate(self.class_names)}


def assemble(images, tables, rejects, matcher: ClassMatcher, num_folds: int, seed: int) -> BuildState:
    """Pass 2: labels, duplicates, folds, QA pairs and class descriptions, all in a sorted order."""
    rejects = list(rejects)
    images = sorted(images, key=lambda image: image.path)
    known_paths = {image.path for image in images} | {reject.path for reject in rejects}
    metadata = _metadata_by_path(sorted(t for t in tables if t[0] == "metadata"), known_paths, rejects)

    labelled: list[tuple[SpooledImage, str]] = []
    for image in images:
        rows = metadata.get(image.path, [])
        explicit, origin, conflict = _explicit_label(rows)
        if conflict:
            rejects.append(Reject(image.path, "label_conflict", conflict))
            continue
        label, why = matcher.resolve(image.path, explicit, origin)
        if label is None:
            rejects.append(Reject(image.path, "unknown_class", f"unknown class: {why}"))
        else:
            labelled.append((image, label))
    class_names = matcher.class_names + matcher.new_names
    label_index = {name: index for index, name in enumerate(class_names)}
    labelled = [(image, matcher.match(label)) for image, label in labelled]  # final spelling of new classes

    by_id: dict[str, list[tuple[SpooledImage, str]]] = defaultdict(list)
    for image, label in labelled:
        by_id[image.image_id].append((image, label))
    kept: list[tuple[SpooledImage, str, list[tuple[str, int, dict]]]] = []
    num_duplicates = num_conflicts = 0
    for image_id in sorted(by_id):
        copies = by_id[image_id]  # sorted by path
        if len({label for _, label in copies}) > 1:
            num_conflicts += 1
            listing = "; ".join(f"{label} in {image.path}" for image, label in copies)
            for image, _ in copies:
                rejects.append(Reject(image.path, "label_conflict", f"label conflict: identical files (sha256 {image_id[:12]}) carry different labels: {listing}"))
            continue
        first, label = copies[0]
        for duplicate, _ in copies[1:]:
            num_duplicates += 1
            rejects.append(Reject(duplicate.path, "duplicate", f"duplicate of {first.path}"))
        # question-answer pairs of every copy belong to the one image kept
        kept.append((first, label, [row for image, _ in copies for row in metadata.get(image.path, [])]))

    folds = assign_folds([image.image_id for image, _, _ in kept], [label_index[label] for _, label, _ in kept], num_folds, seed)
    image_rows, qa_rows, modes = [], [], Counter()
    for (image, label, rows), fold in zip(kept, folds):
        modes[image.mode] += 1
        info_bar, used = _info_bar_columns(image, rows)
        image_rows.append(
            {
                "image": (image.offset, image.length),
                "image_id": image.image_id,
                "label": label_index[label],
                "fold": fold,
                "source": image.path,
                "width": image.width,
                "height": image.height,
                "crop_box": list(image.crop_box),
                **info_bar,
                "metadata": _user_metadata(rows, exclude=used),
            }
        )
        qa_rows.extend(_qa_rows(image, label, label_index[label], fold, rows, rejects))
    qa_rows = _unique(sorted(qa_rows, key=lambda r: (r["image_id"], r["question_id"], r["question"], r["answer"], r["teacher"], r["caption"], r["prompt_version"])))
    description_rows = _description_rows(sorted(t for t in tables if t[0] == "class_descriptions"), matcher, label_index, rejects)
    return BuildState(class_names, image_rows, qa_rows, description_rows, rejects, num_duplicates, num_conflicts, modes)


def _metadata_by_path(tables, known_paths: set[str], rejects: list[Reject]) -> dict[str, list[tuple[str, int, dict]]]:
    """Metadata rows keyed by the file they describe (``file_name`` is relative to the table's folder)."""
    by_path: dict[str, list[tuple[str, int, dict]]] = defaultdict(list)
    for _, table_path, rows in tables:
        if rows and not any("file_name" in row for _, row in rows):
            columns = sorted({key for _, row in rows for key in row})
            rejects.append(Reject(table_path, "metadata", f"no 'file_name' column (columns: {', '.join(columns)}); the table was ignored"))
            continue
        folder = posixpath.dirname(table_path)
        for number, row in rows:
            name = clean_member_path(str(row.get("file_name", "")))
            if name is None:
                rejects.append(Reject(table_path, "metadata", f"row {number}: missing or invalid file_name {row.get('file_name')!r}"))
                continue
            path = posixpath.join(folder, name) if folder else name
            if path not in known_paths:
                rejects.append(Reject(path, "metadata", f"listed in {table_path} (row {number}) but not found in the source"))
                continue
            by_path[path].append((table_path, number, row))
    return by_path


def _explicit_label(rows: list[tuple[str, int, dict]]) -> tuple[str | None, str, str]:
    """(label, where it came from, conflict message) from an image's metadata rows."""
    found: dict[str, tuple[str, str]] = {}  # spelling-insensitive key -> (label as first written, where)
    for table_path, number, row in rows:
        if "label" in row:
            label = str(row["label"]).strip()
            found.setdefault(normalize_class_name(label), (label, f"{table_path} row {number}"))
    if not found:
        return None, "", ""
    if len(found) > 1:
        listing = ", ".join(f"{label!r} ({where})" for label, where in found.values())
        return None, "", f"label conflict: metadata rows disagree on the label: {listing}"
    label, origin = next(iter(found.values()))
    return label, origin, ""


def _info_bar_columns(image: SpooledImage, rows: list[tuple[str, int, dict]]) -> tuple[dict, set[str]]:
    """What the information bar says: the measured scale bar, and what the user's metadata states (no OCR).

    A metadata column named like an info-bar column (``magnification``, ``accelerating_voltage_kv``, ...)
    fills it when its value is a number (``detector``: any text); other values stay in ``metadata``.
    Returns the columns and the metadata keys they used.
    """
    values: dict = dict.fromkeys(INFO_BAR_COLUMNS)
    used: set[str] = set()
    for _, _, row in rows:
        for name in INFO_BAR_COLUMNS:
            if values[name] is None and row.get(name) not in (None, ""):
                value = str(row[name]) if name == "detector" else _number(row[name])
                if value is not None:
                    values[name] = value
                    used.add(name)
    if values["scale_bar_px"] is None:
        values["scale_bar_px"] = image.scale_bar_px
    if values["pixel_size_nm"] is None and values["scale_bar_nm"] and values["scale_bar_px"]:
        values["pixel_size_nm"] = values["scale_bar_nm"] / values["scale_bar_px"]
    return values, used


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _user_metadata(rows: list[tuple[str, int, dict]], exclude: set[str] = frozenset()) -> str:
    extra: dict = {}
    for _, _, row in rows:
        for key, value in row.items():
            if key not in RESERVED_COLUMNS and key not in exclude:
                extra.setdefault(key, value)
    return json.dumps(extra, sort_keys=True, ensure_ascii=False)


def _qa_rows(image: SpooledImage, label: str, label_id: int, fold: int, rows, rejects: list[Reject]) -> list[dict]:
    qa = []
    for table_path, number, row in rows:
        has_question, has_answer = "question" in row, "answer" in row
        if not (has_question or has_answer):
            continue
        if has_question != has_answer:
            what = "a question without an answer" if has_question else "an answer without a question"
            rejects.append(Reject(table_path, "metadata", f"row {number}: {what}; the pair was skipped"))
            continue
        question = str(row["question"])
        if "question_id" in row:
            try:
                question_id = int(row["question_id"])
            except (TypeError, ValueError):
                rejects.append(Reject(table_path, "metadata", f"row {number}: question_id {row['question_id']!r} is not an integer; the pair was skipped"))
                continue
        else:  # one of the paper's ten prompt families, or 0 for a free-form in-house question
            question_id = _FAMILY_BY_QUESTION.get(question, 0)
        family = FAMILY_BY_ID.get(question_id)
        qa.append(
            {
                "image_id": image.image_id,  # joins the images subset: no copy of the image
                "label": label_id,
                "question_id": question_id,
                "question": question,
                # names the true class: the paper's label-conditioned protocol, as in every emvision vqa subset
                "caption": str(row.get("caption", caption_for(label))),
                "answer": str(row["answer"]),
                "teacher": str(row.get("teacher", IN_HOUSE_TEACHER)),
                "prompt_version": str(row.get("prompt_version", PROMPT_VERSION if family and family.question == question else IN_HOUSE_TEACHER)),
                "fold": fold,
            }
        )
    return qa


def _unique(rows: list[dict]) -> list[dict]:
    unique, seen = [], set()
    for row in rows:
        key = tuple((k, v) for k, v in row.items())
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _description_rows(tables, matcher: ClassMatcher, label_index: dict[str, int], rejects: list[Reject]) -> list[dict]:
    rows = []
    for _, table_path, table in tables:
        for number, row in table:
            if "label" not in row or "description" not in row:
                rejects.append(Reject(table_path, "metadata", f"row {number}: a class description needs 'label' and 'description'"))
                continue
            name = matcher.match(str(row["label"]))
            if name is None or name not in label_index:
                rejects.append(Reject(table_path, "unknown_class", f"row {number}: label {row['label']!r} is not one of the classes ({', '.join(label_index)})"))
                continue
            rows.append(
                {
                    "label": label_index[name],
                    "name": name,
                    "description": str(row["description"]),
                    "source": str(row.get("source", HUMAN_SOURCE)),
                    "prompt": str(row.get("prompt", "")),
                }
            )
    return _unique(sorted(rows, key=lambda r: (r["label"], r["source"], r["description"], r["prompt"])))


def human_description_rows(class_names: list[str]) -> tuple[list[dict], list[str]]:
    """``class_descriptions`` rows from the project's hand-written descriptions (``source="human"``), for
    the classes that have one (the ten SEM categories, matched however they are spelled)."""
    from emvision.datasets_scripts.synthetic.human_descriptions import HUMAN_DESCRIPTIONS
    from emvision.vocabulary import class_description_prompt

    by_key = {normalize_class_name(name): name for name in HUMAN_DESCRIPTIONS}
    rows, covered = [], []
    for label, name in enumerate(class_names):
        category = by_key.get(normalize_class_name(name))
        if category is not None:
            rows.append({"label": label, "name": name, "description": HUMAN_DESCRIPTIONS[category], "source": HUMAN_SOURCE,
                         "prompt": class_description_prompt(category)})
            covered.append(name)
    return rows, covered
