"""The emvision dataset schema (one `datasets.Features` per subset) and the rules every builder shares.

Subsets, each saved with ``save_to_disk`` under ``DIR/<subset>``:

- ``images``: one row per micrograph.
- ``vqa``: one row per question-answer pair.
- ``class_descriptions``: one row per (class, description) text used by HNF's text branch.

Every row says where its image and its text came from (``source``, ``teacher``), so synthetic
images, oracle answers and hand-written descriptions can never pass for real data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from emvision.vocabulary import SEM_CATEGORIES

if TYPE_CHECKING:
    from datasets import ClassLabel, Features

# ``datasets`` is imported by the functions that build features, not here: a command line that only
# needs the constants (to answer --help) does not load it.

SUBSETS = ("images", "vqa", "class_descriptions")
DEFAULT_SHORT_SIDE = 256
SYNTHETIC_SOURCE = "synthetic"
ORACLE_TEACHER = "oracle-synthetic"
HUMAN_SOURCE = "human"


def class_label(names: Sequence[str] = SEM_CATEGORIES) -> ClassLabel:
    from datasets import ClassLabel

    return ClassLabel(names=list(names))


def images_features(names: Sequence[str] = SEM_CATEGORIES) -> Features:
    from datasets import Features, Image, Value

    return Features(
        {
            "image": Image(),
            "image_id": Value("string"),  # sha256 of the original file's bytes
            "label": class_label(names),
            "fold": Value("int32"),
            "source": Value("string"),  # archive path, user path, or "synthetic"
            "width": Value("int32"),  # original size, before pre-resizing
            "height": Value("int32"),
            "metadata": Value("string"),  # JSON: generator parameters (synthetic) or user metadata
        }
    )


def vqa_features(names: Sequence[str] = SEM_CATEGORIES) -> Features:
    from datasets import Features, Image, Value

    return Features(
        {
            "image_id": Value("string"),
            "image": Image(),
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
