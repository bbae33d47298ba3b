"""The emvision dataset schema (one `datasets.Features` per subset) and the rules every builder shares.

Schema version 2 (``SCHEMA_VERSION``). Subsets, each saved with ``save_to_disk`` under ``DIR/<subset>``:

- ``images``: one row per micrograph. ``image`` is what the models read: the information bar cropped
  off and resized to ``MODEL_IMAGE_SIZE`` x ``MODEL_IMAGE_SIZE`` at build time, exactly as
  ``MicrographImageProcessor`` does it (``model_image.py``), 8-bit ``L`` when the micrograph is gray.
  The original size, the crop box and what the information bar says are columns of their own.
- ``vqa``: one row per question-answer pair, **no image**: ``image_id`` joins ``images``.
- ``class_descriptions``: one row per (class, description) text used by HNF's text branch.

Every row says where its image and its text came from (``source``, ``teacher``), so synthetic
images, oracle answers and hand-written descriptions can never pass for real data.

Version 1 stored the image again in every ``vqa`` row and kept the information bar in ``images``
(resized to a 256 px short side); ``conversion.py`` reads and converts it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emvision.vocabulary import SEM_CATEGORIES

if TYPE_CHECKING:
    from datasets import ClassLabel, Features

# ``datasets`` is imported by the functions that build features, not here: a command line that only
# needs the constants (to answer --help) does not load it.

SUBSETS = ("images", "vqa", "class_descriptions")
SCHEMA_VERSION = 2  # recorded as "2.0.0" in each saved subset's dataset_info.json (``stamp_schema_version``)
# The side of the stored square image: MicrographImageProcessor's default size (224x224, the papers' input).
MODEL_IMAGE_SIZE = 224
# The synthetic generator's default frame (short side, 4:3); version 1 also stored images at this short side.
DEFAULT_SHORT_SIDE = 256
SYNTHETIC_SOURCE = "synthetic"
ORACLE_TEACHER = "oracle-synthetic"
HUMAN_SOURCE = "human"


def class_label(names: Sequence[str] = SEM_CATEGORIES) -> ClassLabel:
    from datasets import ClassLabel

    return ClassLabel(names=list(names))


# What the information bar says, one column each; null where it is not known. Synthetic images take them
# from the generator; real ones get what can be measured without OCR (the scale bar's length in pixels).
INFO_BAR_COLUMNS = (
    "scale_bar_px",  # the scale bar's length in original pixels (measured)
    "scale_bar_nm",  # the length its label states
    "pixel_size_nm",  # nm per original pixel
    "magnification",
    "accelerating_voltage_kv",
    "working_distance_mm",
    "detector",
)


def images_features(names: Sequence[str] = SEM_CATEGORIES) -> Features:
    from datasets import Features, Image, List, Value

    return Features(
        {
            "image": Image(),  # bar cropped off, resized to MODEL_IMAGE_SIZE x MODEL_IMAGE_SIZE: what the models read
            "image_id": Value("string"),  # sha256 of the original file's bytes
            "label": class_label(names),
            "fold": Value("int32"),
            "source": Value("string"),  # archive path, user path, or "synthetic"
            "width": Value("int32"),  # original size
            "height": Value("int32"),
            "crop_box": List(Value("int32"), length=4),  # (left, top, right, bottom) of the original that `image` shows
            "scale_bar_px": Value("float64"),
            "scale_bar_nm": Value("float64"),
            "pixel_size_nm": Value("float64"),
            "magnification": Value("float64"),
            "accelerating_voltage_kv": Value("float64"),
            "working_distance_mm": Value("float64"),
            "detector": Value("string"),
            "metadata": Value("string"),  # JSON: generator parameters (synthetic) or user metadata
        }
    )


def vqa_features(names: Sequence[str] = SEM_CATEGORIES) -> Features:
    from datasets import Features, Value

    return Features(
        {
            "image_id": Value("string"),  # joins the images subset
            "label": class_label(names),
            "question_id": Value("int32"),  # prompt family 1..10 of the MVaEMa paper
            "question": Value("string"),
            "caption": Value("string"),  # names the true category: paper protocol, label-conditioned
            "answer": Value("string"),
            "teacher": Value("string"),  # model name, or "oracle-synthetic"
            "prompt_version": Value("string"),
            "fold": Value("int32"),
        }
    )


def class_descriptions_features(names: Sequence[str] = SEM_CATEGORIES) -> Features:
    from datasets import Features, Value

    return Features(
        {
            "label": class_label(names),
            "name": Value("string"),
            "description": Value("string"),
            "source": Value("string"),  # model name, "oracle-synthetic", or "human"
            "prompt": Value("string"),
        }
    )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stamp_schema_version(subset_dir: str | os.PathLike) -> None:
    """Record ``SCHEMA_VERSION`` in a subset saved with ``save_to_disk`` (``dataset_info.json``'s ``version``).

    ``load_from_disk`` reads it back as ``dataset.info.version``; :func:`schema_version` reads it.
    """
    path = Path(subset_dir) / "dataset_info.json"
    info = json.loads(path.read_text(encoding="utf-8"))
    info["version"] = f"{SCHEMA_VERSION}.0.0"
    path.write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")


def schema_version(dataset, subset: str) -> int:
    """The schema version of a loaded subset: the recorded one, else told from its columns.

    Datasets from the Hub or written before versions were recorded carry none: a ``vqa`` subset with an
    ``image`` column, or an ``images`` subset without ``crop_box``, is version 1.
    """
    version = getattr(getattr(dataset, "info", None), "version", None)
    if version is not None and str(version) not in ("", "0.0.0"):
        return int(str(version).split(".")[0])
    columns = set(dataset.column_names or dataset.features or ())
    if subset == "vqa":
        return 1 if "image" in columns else SCHEMA_VERSION
    if subset == "images":
        return SCHEMA_VERSION if "crop_box" in columns else 1
    return SCHEMA_VERSION
