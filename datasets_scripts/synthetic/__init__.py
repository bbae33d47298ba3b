"""Synthetic SEM micrographs with exactly right answers: the generator, the oracle, and the synthetic-set builder.

SYNTHETIC DATA, ORACLE ANSWERS. Nothing here is a real micrograph or a model's answer.

- the generator (``generator.generate_micrograph``): ``specs`` (the ten classes' ranges, units),
  ``fields`` (numeric building blocks), ``scene`` (height and material maps, shapes), ``renderers``
  (one per class), ``acquisition`` (detector signal and noise), ``info_bar`` (the burned-in data bar);
- ``oracle``: answers and class descriptions read off the generating parameters;
- ``human_descriptions``: hand-written class descriptions;
- ``build`` (``synthesize``), ``card``, and ``cache`` (``load_or_create_synthetic``, what training uses);
  ``datasets_scripts/synthesize.py`` is the command line.
"""

from .build import (
    DEFAULT_DESCRIPTIONS_PER_CLASS,
    DEFAULT_RENDER_SCALE,
    MARKER_FILE,
    cache_key,
    class_description_rows,
    default_num_workers,
    render_images,
    summary_line,
    synthesize,
)
from .cache import CACHE_ENV, DEFAULT_NUM_IMAGES, default_cache_dir, load_or_create_synthetic
from .card import dataset_card
from .generator import GENERATOR_NAME, GENERATOR_VERSION, SyntheticMicrograph, category_for_index, generate_micrograph
from .human_descriptions import human_class_description_rows
from .oracle import CATEGORY_NAMES, oracle_answer, oracle_answers, oracle_class_descriptions
from .specs import CLASS_SPECS, REFERENCE_DISPLAY_WIDTH_MM, ClassSpec, format_length, hfw_nm, stored_size

__all__ = [
    "CACHE_ENV",
    "CATEGORY_NAMES",
    "CLASS_SPECS",
    "DEFAULT_DESCRIPTIONS_PER_CLASS",
    "DEFAULT_NUM_IMAGES",
    "DEFAULT_RENDER_SCALE",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "MARKER_FILE",
    "REFERENCE_DISPLAY_WIDTH_MM",
    "ClassSpec",
    "SyntheticMicrograph",
    "cache_key",
    "category_for_index",
    "class_description_rows",
    "dataset_card",
    "default_cache_dir",
    "default_num_workers",
    "format_length",
    "generate_micrograph",
    "hfw_nm",
    "human_class_description_rows",
    "load_or_create_synthetic",
    "oracle_answer",
    "oracle_answers",
    "oracle_class_descriptions",
    "render_images",
    "stored_size",
    "summary_line",
    "synthesize",
]
