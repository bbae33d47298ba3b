"""How an emvision dataset is stored: the subsets' schema, the folds, and reading texts back.

Pure Python plus ``datasets``: importing it loads neither torch nor any model code.
"""

from .descriptions import class_descriptions_by_class
from .folds import DEFAULT_NUM_FOLDS, assign_folds, fold_splits
from .schema import (
    DEFAULT_SHORT_SIDE,
    HUMAN_SOURCE,
    ORACLE_TEACHER,
    SUBSETS,
    SYNTHETIC_SOURCE,
    class_descriptions_features,
    class_label,
    images_features,
    sha256_bytes,
    vqa_features,
)

__all__ = [
    "DEFAULT_NUM_FOLDS",
    "DEFAULT_SHORT_SIDE",
    "HUMAN_SOURCE",
    "ORACLE_TEACHER",
    "SUBSETS",
    "SYNTHETIC_SOURCE",
    "assign_folds",
    "class_descriptions_by_class",
    "class_descriptions_features",
    "class_label",
    "fold_splits",
    "images_features",
    "sha256_bytes",
    "vqa_features",
]
