"""What a teacher run asks for: its settings, and every request it is responsible for, each under a cache key.

The plan is made from the ``images`` subset alone (image_id, label, fold), in image_id order, so the
same dataset and settings always give the same requests and the same keys: a rerun finds the answers
it already has (see ``cache.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emvision.vocabulary import (
    FAMILY_BY_ID,
    PROMPT_VERSION,
    TEACHER_SYSTEM_PROMPT,
    caption_for,
    class_description_prompt,
)

from .cache import cache_key

REQUIRED_IMAGE_COLUMNS = ("image", "image_id", "label", "fold")


@dataclass(frozen=True)
class TeacherSettings:
    """Everything an answer depends on besides the image and the question; all of it is in the cache key."""

    model: str
    temperature: float = 0.25
    top_p: float = 0.1
    max_tokens: int = 3500
    max_tokens_param: str = "max_tokens"  # newer OpenAI models want "max_completion_tokens"
    image_detail: str = "high"
    with_caption: bool = True  # the paper's protocol: the caption names the true category
    system_prompt: str = TEACHER_SYSTEM_PROMPT
    prompt_version: str = PROMPT_VERSION
    description_model: str | None = None  # defaults to ``model``

    def __post_init__(self):
        if self.image_detail not in ("low", "high", "auto"):
            raise ValueError(f"image_detail must be 'low', 'high' or 'auto', got {self.image_detail!r}")
        if self.max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(f"max_tokens_param must be 'max_tokens' or 'max_completion_tokens', got {self.max_tokens_param!r}")
        if not 0 <= self.temperature <= 2 or not 0 < self.top_p <= 1 or self.max_tokens < 1:
            raise ValueError(f"bad sampling parameters: temperature={self.temperature}, top_p={self.top_p}, max_tokens={self.max_tokens}")

    @property
    def descriptions_by(self) -> str:
        return self.description_model or self.model

    def sampling(self, model: str) -> dict:
        return {"model": model, "temperature": self.temperature, "top_p": self.top_p, self.max_tokens_param: self.max_tokens}


@dataclass
class PlannedImage:
    row: int  # in the images subset
    image_id: str
    label: int
    fold: int
    keys: dict[int, str]  # question_id -> cache key


@dataclass
class Plan:
    settings: TeacherSettings
    label_names: list[str]
    question_ids: list[int]
    images: list[PlannedImage]  # sorted by image_id
    descriptions: list[tuple[int, int, str]] = field(default_factory=list)  # (label, sample, key)

    def keys(self) -> list[str]:
        return [key for image in self.images for key in image.keys.values()] + [key for _, _, key in self.descriptions]


def vqa_user_text(question: str, caption: str) -> str:
    return f"{caption}\n\n{question}" if caption else question


def vqa_key(settings: TeacherSettings, image_id: str, question_id: int, caption: str) -> str:
    return cache_key(
        {
            "kind": "vqa",
            "image_id": image_id,
            "question_id": question_id,
            "question": FAMILY_BY_ID[question_id].question,
            "caption": caption,
            "system_prompt": settings.system_prompt,
            "image_detail": settings.image_detail,
            "prompt_version": settings.prompt_version,
            **settings.sampling(settings.model),
        }
    )


def description_key(settings: TeacherSettings, label_name: str, sample: int) -> str:
    return cache_key(
        {
            "kind": "class_description",
            "label": label_name,
            "sample": sample,
            "prompt": class_description_prompt(label_name),
            "prompt_version": settings.prompt_version,
            **settings.sampling(settings.descriptions_by),
        }
    )


def load_images(dataset_dir: str | Path):
    """The ``images`` subset with undecoded images (raw bytes), and its class names."""
    from datasets import Image, load_from_disk

    path = Path(dataset_dir) / "images"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found: DATASET_DIR must hold an 'images' subset saved with save_to_disk (datasets_scripts/build_sem.py writes one)")
    images = load_from_disk(str(path))
    missing = [name for name in REQUIRED_IMAGE_COLUMNS if name not in images.column_names]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; an images subset has {list(REQUIRED_IMAGE_COLUMNS)} (datasets_scripts/storage/schema.py)")
    label_feature = images.features["label"]
    if not hasattr(label_feature, "names"):
        raise ValueError(f"{path}: 'label' must be a ClassLabel, got {label_feature}")
    return images.cast_column("image", Image(decode=False)), list(label_feature.names)


def plan_requests(
    images,
    label_names: Sequence[str],
    settings: TeacherSettings,
    *,
    question_ids: Sequence[int] | None = None,
    limit_images: int | None = None,
    folds: Sequence[int] | None = None,
    descriptions_per_class: int = 1,
) -> Plan:
    """Every request the run is responsible for (cached or not), images in image_id order."""
    if descriptions_per_class < 0 or (limit_images is not None and limit_images < 0):
        raise ValueError(f"descriptions_per_class and limit_images must be >= 0, got {descriptions_per_class} and {limit_images}")
    question_ids = sorted(set(question_ids or FAMILY_BY_ID))
    unknown = [q for q in question_ids if q not in FAMILY_BY_ID]
    if unknown:
        raise ValueError(f"unknown question id(s) {unknown}; the prompt families are {sorted(FAMILY_BY_ID)}")
    columns = images.select_columns(["image_id", "label", "fold"]).to_dict()
    rows = sorted(range(len(images)), key=lambda row: columns["image_id"][row])
    if folds is not None:
        wanted = set(folds)
        rows = [row for row in rows if columns["fold"][row] in wanted]
    if limit_images is not None:
        rows = rows[:limit_images]
    planned, seen = [], set()
    for row in rows:
        image_id, label = columns["image_id"][row], columns["label"][row]
        if image_id in seen:  # the same micrograph twice: one set of answers, one set of rows
            continue
        seen.add(image_id)
        caption = caption_for(label_names[label]) if settings.with_caption else ""
        keys = {q: vqa_key(settings, image_id, q, caption) for q in question_ids}
        planned.append(PlannedImage(row, image_id, label, columns["fold"][row], keys))
    descriptions = [(label, sample, description_key(settings, name, sample)) for label, name in enumerate(label_names) for sample in range(descriptions_per_class)]
    return Plan(settings, list(label_names), question_ids, planned, descriptions)
