"""A dataset folder in the version-1 layout, as emvision wrote them before schema 2 (SYNTHETIC data).

Version 1 stored each synthetic frame as generated (341x256, information bar on) in ``images`` and again in
every ``vqa`` row. Used to check that such folders still load and convert.
"""

from __future__ import annotations

from pathlib import Path

from datasets import ClassLabel, Dataset, Features, Image, Value

from emvision.datasets_scripts.storage import assign_folds, class_descriptions_features, sha256_bytes
from emvision.datasets_scripts.synthetic import generate_micrograph, human_class_description_rows, oracle_answers
from emvision.vocabulary import PROMPT_FAMILIES, PROMPT_VERSION, SEM_CATEGORIES, caption_for


def v1_features() -> tuple[Features, Features]:
    label = ClassLabel(names=list(SEM_CATEGORIES))
    images = Features({"image": Image(), "image_id": Value("string"), "label": label, "fold": Value("int32"), "source": Value("string"),
                       "width": Value("int32"), "height": Value("int32"), "metadata": Value("string")})
    vqa = Features({"image_id": Value("string"), "image": Image(), "label": label, "question_id": Value("int32"), "question": Value("string"),
                    "caption": Value("string"), "answer": Value("string"), "teacher": Value("string"), "prompt_version": Value("string"),
                    "fold": Value("int32")})
    return images, vqa


def write_v1_dataset(root: Path, num_images: int = 20, seed: int = 5, num_folds: int = 5) -> Path:
    """``root/images``, ``root/vqa`` (the image in every row) and ``root/class_descriptions``, version 1."""
    frames = [generate_micrograph(index, seed) for index in range(num_images)]
    pngs = [frame.png_bytes() for frame in frames]
    ids = [sha256_bytes(png) for png in pngs]
    folds = assign_folds(ids, [frame.label for frame in frames], num_folds=num_folds, seed=seed)
    image_rows, vqa_rows = [], []
    for frame, png, image_id, fold in zip(frames, pngs, ids, folds):
        image = {"bytes": png, "path": None}
        image_rows.append({"image": image, "image_id": image_id, "label": frame.label, "fold": fold, "source": "synthetic",
                           "width": 682, "height": 512, "metadata": frame.metadata_json()})
        answers = oracle_answers(frame.metadata)
        for family in PROMPT_FAMILIES[:3]:
            vqa_rows.append({"image_id": image_id, "image": image, "label": frame.label, "question_id": family.question_id,
                             "question": family.question, "caption": caption_for(frame.category), "answer": answers[family.question_id],
                             "teacher": "oracle-synthetic", "prompt_version": PROMPT_VERSION, "fold": fold})
    images_features, vqa_features = v1_features()
    Dataset.from_list(image_rows, features=images_features).save_to_disk(str(root / "images"))
    Dataset.from_list(vqa_rows, features=vqa_features).save_to_disk(str(root / "vqa"))
    Dataset.from_list(human_class_description_rows(), features=class_descriptions_features()).save_to_disk(str(root / "class_descriptions"))
    (root / "README.md").write_text("# a version-1 synthetic set\n", encoding="utf-8")
    return root
