"""Processors of emvision: the micrograph reader and image processor (HNF and MVaEMa), the tokenizer, MVaEMaProcessor.

The names below are loaded on first use (PEP 562), like transformers' lazy modules: importing
`emvision.processing.micrograph` (numpy and PIL only, what data code needs) loads neither
transformers nor torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the submodule that defines it
_LAZY_NAMES = {
    # --- MVaEMa ---
    "MVaEMaProcessor": "processing_mvaema",
    "tidy_spacing": "processing_mvaema",
    "build_default_processor": "tokenization_micrograph",
    "build_default_tokenizer": "tokenization_micrograph",
    "prepare_tokenizer": "tokenization_micrograph",
    "train_wordpiece_tokenizer": "tokenization_micrograph",
    # --- image processor (shared by HNF and MVaEMa) ---
    "MicrographImageProcessor": "image_processing_micrograph",
    # --- reading micrographs (numpy and PIL only) ---
    "MicrographImageError": "micrograph",
    "detect_info_bar": "micrograph",
    "load_micrograph": "micrograph",
    "micrograph_to_array": "micrograph",
    "remove_info_bar": "micrograph",
}

__all__ = sorted(_LAZY_NAMES)

if TYPE_CHECKING:
    from .image_processing_micrograph import MicrographImageProcessor
    from .micrograph import MicrographImageError, detect_info_bar, load_micrograph, micrograph_to_array, remove_info_bar
    from .processing_mvaema import MVaEMaProcessor, tidy_spacing
    from .tokenization_micrograph import (
        build_default_processor,
        build_default_tokenizer,
        prepare_tokenizer,
        train_wordpiece_tokenizer,
    )


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))
