"""How an emvision dataset is stored: the subsets' schema, the folds, writing subsets into place, and reading texts back.

Pure Python plus ``datasets``: importing it loads neither torch nor any model code. The names are
loaded on first use (PEP 562), so a tool that only needs the lock or the folds (e.g. to answer
``--help``) does not load ``datasets`` either.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the submodule that defines it
_LAZY_NAMES = {
    "class_descriptions_by_class": "descriptions",
    "DEFAULT_NUM_FOLDS": "folds",
    "assign_folds": "folds",
    "fold_splits": "folds",
    "LockBusyError": "locking",
    "exit_with_parent": "locking",
    "file_lock": "locking",
    "DEFAULT_SHORT_SIDE": "schema",
    "HUMAN_SOURCE": "schema",
    "INFO_BAR_COLUMNS": "schema",
    "MODEL_IMAGE_SIZE": "schema",
    "ORACLE_TEACHER": "schema",
    "SCHEMA_VERSION": "schema",
    "SUBSETS": "schema",
    "SYNTHETIC_SOURCE": "schema",
    "class_descriptions_features": "schema",
    "class_label": "schema",
    "images_features": "schema",
    "schema_version": "schema",
    "sha256_bytes": "schema",
    "stamp_schema_version": "schema",
    "vqa_features": "schema",
    "progress_bars": "writing",
    "remove_path": "writing",
    "replace_path": "writing",
    "save_subset": "writing",
    "staged_write": "writing",
}

__all__ = sorted(_LAZY_NAMES)

if TYPE_CHECKING:
    from .descriptions import class_descriptions_by_class
    from .folds import DEFAULT_NUM_FOLDS, assign_folds, fold_splits
    from .locking import LockBusyError, exit_with_parent, file_lock
    from .schema import (
        DEFAULT_SHORT_SIDE,
        HUMAN_SOURCE,
        INFO_BAR_COLUMNS,
        MODEL_IMAGE_SIZE,
        ORACLE_TEACHER,
        SCHEMA_VERSION,
        SUBSETS,
        SYNTHETIC_SOURCE,
        class_descriptions_features,
        class_label,
        images_features,
        schema_version,
        sha256_bytes,
        stamp_schema_version,
        vqa_features,
    )
    from .writing import progress_bars, remove_path, replace_path, save_subset, staged_write


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))
